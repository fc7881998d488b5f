"""MNIST / Fashion-MNIST from tiny IDX files written in tmp_path: reading, errors, training."""

from __future__ import annotations

import gzip
import itertools
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fcn_research.data import MNIST, FashionMNIST
from fcn_research.data.mnist import FILE_NAMES, IdxFormatError, read_idx
from fcn_research.train import train

N_TRAIN, N_TEST = 60, 20


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped if ``gz`` (then ``path`` gains .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_dataset(root: Path, folder: str = "MNIST", gz: bool = True) -> dict[str, Path]:
    """The four official files of a tiny MNIST-like dataset in ``root/folder/raw``."""
    rng = np.random.default_rng(0)
    paths = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        raw = root / folder / "raw"
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            name = f"{prefix}-{kind}"
            paths[name] = write_idx(raw / name, array, gz)
    return paths


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, gz))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">2i", -1, 70000))
    assert read_idx(path).tolist() == [-1, 70000]


@pytest.mark.parametrize(("data", "gz"), [("mnist", True), ("fashion_mnist", False)])
def test_train_on_idx_files(tmp_path: Path, make_cfg, data: str, gz: bool) -> None:
    folder = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[data]
    write_dataset(tmp_path / "files", folder, gz)
    cfg = make_cfg(
        f"data={data}", f"data.root={tmp_path / 'files'}", "depth=2", "width=8", "max_epochs=1"
    )
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["hparams"]["data"] == data
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= result["metrics"].keys()
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "completed"


def test_official_split_and_standardisation(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    dm = MNIST(root=tmp_path)
    dm.setup("fit")
    n_val = round(N_TRAIN / 6)
    assert dm.x_train.shape == (N_TRAIN - n_val, 784) and dm.x_val.shape == (n_val, 784)
    assert dm.x_test.shape == (N_TEST, 784) and dm.y_test.dtype == torch.long
    assert dm.num_features == 784 and dm.num_outputs == 10
    # Test pixels use the training statistics: standardised train is exactly mean 0.
    assert dm.x_train.mean(0).abs().max() < 1e-4
    assert dm.x_test.mean(0).abs().max() > 1e-3
    assert sum(len(x) for x, _ in dm.test_dataloader()) == N_TEST
    raw = read_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz")
    assert dm.y_test.tolist() == raw.tolist()


def test_faint_rare_ink_stays_faint(tmp_path: Path) -> None:
    # A 10x10 "digit" of random ink, and one corner pixel inked faintly (0.2) in one image:
    # by its own std that pixel would become the largest input (7.6, ~sqrt(n) for any ink);
    # with one scale for all pixels it stays below the digit's ink, as in the raw images.
    rng = np.random.default_rng(0)
    images = np.zeros((N_TRAIN, 28, 28), dtype=np.uint8)
    images[:, 9:19, 9:19] = rng.integers(0, 256, size=(N_TRAIN, 10, 10))
    images[0, 0, 0] = 51
    for prefix, array in (("train", images), ("t10k", images[:N_TEST])):
        raw = tmp_path / "MNIST" / "raw"
        write_idx(raw / f"{prefix}-images-idx3-ubyte", array, gz=False)
        labels = np.arange(len(array), dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz=False)
    dm = MNIST(root=tmp_path, val_fraction=0.0)  # image 0 trains
    dm.setup("fit")
    corner = dm.x_train[:, 0].abs().max().item()
    ink = dm.x_train.reshape(-1, 28, 28)[:, 9:19, 9:19].abs().max().item()
    assert dm.x_train.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    assert corner < ink / 2, (corner, ink)


def test_dataset_without_test_split_says_so(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    dm = MNIST(root=tmp_path)
    dm.setup("fit")
    dm.x_test = None
    with pytest.raises(RuntimeError, match="has no test split"):
        dm.test_dataloader()


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_names_the_file(tmp_path: Path, gz: bool) -> None:
    path = write_dataset(tmp_path, gz=gz)["train-images-idx3-ubyte"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match="truncated") as err:
        MNIST(root=tmp_path).setup("fit")
    assert str(path) in str(err.value)


def test_trailing_bytes_are_an_error(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, gz=False)["t10k-labels-idx1-ubyte"]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IdxFormatError, match=r"trailing bytes.*holds 21") as err:
        MNIST(root=tmp_path).setup("fit")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_magic_number_names_the_file(tmp_path: Path, gz: bool) -> None:
    path = write_dataset(tmp_path, gz=gz)["train-labels-idx1-ubyte"]
    data = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    data[:4] = b"\x08\x08\x00\x01"
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    with pytest.raises(IdxFormatError, match="magic number 0x08080001") as err:
        MNIST(root=tmp_path).setup("fit")
    assert str(path) in str(err.value)


def test_label_count_must_match_images(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=False)
    path = write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(59), False)
    with pytest.raises(IdxFormatError, match="expected 60 uint8 labels") as err:
        MNIST(root=tmp_path).setup("fit")
    assert str(path) in str(err.value)


def test_missing_files_list_names_directory_and_remedy(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path)
    paths["t10k-images-idx3-ubyte"].unlink()
    with pytest.raises(FileNotFoundError) as err:
        FashionMNIST(root=tmp_path).setup("fit")  # the files are MNIST's, not Fashion-MNIST's
    message = str(err.value)
    assert str((tmp_path / "FashionMNIST" / "raw").resolve()) in message
    assert "4 of its 4 IDX files are missing" in message
    assert all(name in message for name in FILE_NAMES)
    assert "data.download=true" in message and "pip install -e '.[vision]'" in message
    with pytest.raises(FileNotFoundError, match=r"missing from .*: t10k-images-idx3-ubyte\. "):
        MNIST(root=tmp_path).setup("fit")


def test_download_without_torchvision_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[vision\]'"):
        MNIST(root=tmp_path, download=True).prepare_data()


def test_download_is_skipped_when_files_exist(tmp_path: Path, monkeypatch) -> None:
    write_dataset(tmp_path)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    assert len(MNIST(root=tmp_path, download=True).find_files()) == 4


def test_data_root_default_follows_env(make_cfg, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FCN_DATA_DIR", str(tmp_path / "elsewhere"))
    assert make_cfg("data=mnist").data.root == str(tmp_path / "elsewhere")
    monkeypatch.delenv("FCN_DATA_DIR")
    assert make_cfg("data=fashion_mnist").data.root == "data"


def test_glorot_bengio_experiment_composes_every_sweep_job(make_cfg) -> None:
    base = make_cfg("experiment=glorot_bengio_mnist")
    assert (base.depth, base.width, base.batch_size) == (6, 1000, 10)
    params = base.hydra.sweeper.params
    combos = list(
        itertools.product(*(str(params[key]).split(",") for key in ("activation", "initializer")))
    )
    assert combos == [
        ("sigmoid", "default"),
        ("sigmoid", "xavier_uniform"),
        ("tanh", "default"),
        ("tanh", "xavier_uniform"),
    ]
    targets = {"sigmoid": "torch.nn.Sigmoid", "tanh": "torch.nn.Tanh"}
    for activation, initializer in combos:
        cfg = make_cfg(
            "experiment=glorot_bengio_mnist",
            f"activation={activation}",
            f"initializer={initializer}",
        )
        assert cfg.activation._target_ == targets[activation]
        assert cfg.hydra.runtime.choices.initializer == initializer
        assert cfg.data._target_ == "fcn_research.data.MNIST"
        assert cfg.optimizer._target_ == "torch.optim.SGD"
        assert cfg.depth == 6 and cfg.width == 1000


@pytest.mark.slow
def test_glorot_bengio_sweep_cli(tmp_path: Path, run_cli) -> None:
    write_dataset(tmp_path / "files")
    run_cli(
        "-m",
        "experiment=glorot_bengio_mnist",
        f"data.root={tmp_path / 'files'}",
        "depth=2",
        "width=8",
        "max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
    )
    results = sorted((tmp_path / "outputs" / "sweeps").glob("*/*/result.json"))
    assert len(results) == 4
    assert all(json.loads(p.read_text())["status"] == "completed" for p in results)
