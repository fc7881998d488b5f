"""data=mnist1d: generated offline by the mnist1d package, its own test split, cached on disk."""

from __future__ import annotations

import random

import mnist1d.data
import numpy as np
import pytest
import torch

from fcn_research.data import MNIST1D
from fcn_research.train import train

SMALL = {"num_samples": 500, "val_fraction": 0.2}


def built(dm: MNIST1D) -> MNIST1D:
    dm.setup("fit")
    return dm


def test_the_generators_own_split_is_the_test_split(tmp_path):
    dm = built(MNIST1D(**SMALL, cache_dir=tmp_path, standardize=False))
    assert (len(dm.x_train), len(dm.x_val), len(dm.x_test)) == (320, 80, 100)
    assert dm.num_features == 40 and dm.num_outputs == 10
    args = mnist1d.data.get_dataset_args()
    args.num_samples = 500
    ours = mnist1d.data.make_dataset(args)
    assert torch.equal(dm.x_test, torch.from_numpy(ours["x_test"]).float())
    assert torch.equal(dm.y_test, torch.from_numpy(ours["y_test"]))
    # At its defaults, the generator's arguments are the published dataset's (4000 / 1000).
    published = mnist1d.data.get_dataset_args(as_dict=True)
    published.pop("url")
    assert MNIST1D().generator_args() == published


def test_generated_once_then_read_from_the_cache(tmp_path, monkeypatch):
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.get_state()[1].copy(), random.getstate())
    first = built(MNIST1D(**SMALL, cache_dir=tmp_path))
    # Generation seeds numpy's and Python's global generators: they are put back.
    assert np.array_equal(np.random.get_state()[1], expected[0])
    assert random.getstate() == expected[1]
    (cached,) = (tmp_path / "mnist1d").glob("*.npz")
    assert not list((tmp_path / "mnist1d").glob(".*tmp")), "temp file left behind"

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    # A new datamodule (a later job, another process) reads the file.
    second = built(MNIST1D(**SMALL, cache_dir=tmp_path, batch_size=7))
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, key), getattr(second, key)), key
    with pytest.raises(AssertionError, match="generated again"):  # other arguments: other data
        built(MNIST1D(**SMALL, cache_dir=tmp_path, shuffle_seq=True))
    assert cached.exists()


def test_generator_arguments_change_the_data(tmp_path):
    base = built(MNIST1D(**SMALL, cache_dir=tmp_path))
    noisy = built(MNIST1D(**SMALL, cache_dir=tmp_path, iid_noise_scale=0.5))
    shuffled = built(MNIST1D(**SMALL, cache_dir=tmp_path, shuffle_seq=True))
    other_seed = built(MNIST1D(**SMALL, cache_dir=tmp_path, seed=1))
    for other in (noisy, shuffled, other_seed):
        assert not torch.equal(base.x_test, other.x_test)
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 4
    # shuffle_seq permutes the 40 points, the same way for every sample: labels stay.
    assert torch.equal(base.y_test, shuffled.y_test)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"train_split .* must be in \(0, 1\), got 1.0"):
        MNIST1D(train_split=1.0)
    with pytest.raises(ValueError, match=r"iid_noise_scale must be >= 0, got -0\.1"):
        MNIST1D(iid_noise_scale=-0.1)


def test_trains_from_the_config_with_a_test_metric(make_cfg, tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    cfg = make_cfg("data=mnist1d", "data.num_samples=500", cache, "callbacks=none")
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["hparams"]["data"] == "mnist1d" and result["hparams"]["data.seed"] == 42
    assert 0.0 <= result["metrics"]["test/acc"] <= 1.0
    assert list((tmp_path / "cache" / "mnist1d").glob("*.npz"))


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_clearly_beats_logistic_regression(make_cfg, tmp_path, seed):
    # The baselines' ordering on a reduced set: 2000 samples (1280 train), 30 epochs.
    # Measured test/acc (seeds 0, 1, 2): logistic regression 0.27-0.29, MLP 0.49-0.51.
    common = [
        "experiment=mnist1d_baselines",
        "data.num_samples=2000",
        "max_epochs=30",
        "callbacks=none",
        f"seed={seed}",
    ]
    accuracy = {}
    for depth in (1, 3):
        cfg = make_cfg(*common, f"depth={depth}", output_dir=tmp_path / f"depth{depth}")
        accuracy[depth] = train(cfg)["metrics"]["test/acc"]
    assert accuracy[3] > accuracy[1] + 0.1, accuracy
