"""MNIST and Fashion-MNIST from their IDX files: official train/test split, 784 flat pixels.

Nothing downloads unless ``download=True``; then torchvision (the ``vision`` extra) fetches
the files into the same layout that it uses itself, ``<root>/<MNIST|FashionMNIST>/raw``.
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcn_research.data.base import InMemoryDataModule

log = logging.getLogger(__name__)

# IDX: bytes 0-1 are zero, byte 2 codes the element type, byte 3 is the number of dimensions;
# then one big-endian uint32 per dimension, then the elements in C order.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"

# The official split, (images, labels) per split; the same names for MNIST and Fashion-MNIST.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILE_NAMES = tuple(name for pair in SPLIT_FILES.values() for name in pair)


class IdxFormatError(ValueError):
    """An IDX file that is corrupt, truncated, or not IDX at all."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzipped, told apart by content) into an array of its header's shape.

    Raises ``IdxFormatError`` naming the file when the magic number, the type code or the
    byte count disagree with the format, so a bad file never becomes a partial dataset.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise IdxFormatError(
                f"{path}: corrupt or truncated gzip data ({err}); delete it and fetch it again"
            ) from err
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES or data[3] == 0:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise IdxFormatError(
            f"{path}: not an IDX file: magic number 0x{data[:4].hex().upper()}; expected two zero "
            f"bytes, a type code ({codes}) and the number of dimensions, e.g. 0x00000803 for "
            "images or 0x00000801 for labels"
        )
    ndim = data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise IdxFormatError(
            f"{path}: truncated header: {ndim} dimensions need {start} header bytes, "
            f"the file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:start])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected, found = math.prod(shape) * dtype.itemsize, len(data) - start
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise IdxFormatError(
            f"{path}: {problem}: the header says shape {shape} of {dtype.name}, i.e. "
            f"{expected} data bytes, but the file holds {found}; delete it and fetch it again"
        )
    return np.frombuffer(data, dtype, offset=start).astype(dtype.newbyteorder("=")).reshape(shape)


class MNIST(InMemoryDataModule):
    """Handwritten digits from the IDX files in ``<root>/MNIST/raw``: 784 pixels, 10 classes.

    Train and validation come from the official training files (``val_fraction`` of them,
    seeded, validate); the official test files are kept apart as ``x_test`` / ``y_test`` and
    served by ``test_dataloader()``. Pixels are scaled to [0, 1], then, unless
    ``standardize=False``, centred per pixel and divided by one training std (see the base).
    """

    task = "multiclass"
    num_classes = 10
    image_shape = (28, 28)
    folder = "MNIST"  # torchvision's dataset class, and its sub-directory of root
    source = "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror)"

    def __init__(
        self,
        root: str | Path = "data",
        download: bool = False,
        batch_size: int = 64,
        val_fraction: float = 1 / 6,
        seed: int = 0,
        min_batches_per_epoch: int = 1,
        standardize: bool = True,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            seed=seed,
            min_batches_per_epoch=min_batches_per_epoch,
            standardize=standardize,
        )
        self.root = Path(root).expanduser()
        self.download = download

    @property
    def name(self) -> str:
        return "mnist"

    @property
    def directory(self) -> Path:
        """Where the four IDX files are read from (and downloaded to)."""
        return self.root / self.folder / "raw"

    def prepare_data(self) -> None:
        """Download the files if asked to and they are missing (Lightning calls this once)."""
        self.find_files()

    def find_files(self) -> dict[str, Path]:
        """The four IDX files by name (raw before .gz); downloads them if asked and missing."""
        found = self._existing_files()
        if len(found) < len(FILE_NAMES) and self.download:
            self._download()
            found = self._existing_files()
        missing = [name for name in FILE_NAMES if name not in found]
        if missing:
            raise FileNotFoundError(self._missing_message(missing))
        return found

    def _existing_files(self) -> dict[str, Path]:
        found = {}
        for name in FILE_NAMES:
            for candidate in (self.directory / name, self.directory / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        return found

    def _missing_message(self, missing: list[str]) -> str:
        directory = self.directory.resolve()
        return (
            f"{self.name}: {len(missing)} of its {len(FILE_NAMES)} IDX files are missing from "
            f"{directory}: {', '.join(missing)}. Expected there, raw or gzipped (.gz): "
            f"{', '.join(FILE_NAMES)}. To get them: rerun with data.download=true (needs "
            "torchvision: pip install -e '.[vision]'), or download them from "
            f"{self.source} into that directory. To read them from elsewhere, set "
            f"data.root=<dir> or FCN_DATA_DIR=<dir> (the files then go in <dir>/{self.folder}/raw)."
        )

    def _download(self) -> None:
        try:
            import torchvision.datasets
        except ImportError as err:
            raise ImportError(
                f"{self.name}: data.download=true fetches the files with torchvision, which is "
                "not installed. Install it with pip install -e '.[vision]' (a torchvision build "
                f"that matches torch {torch.__version__}), or put the files in "
                f"{self.directory.resolve()} yourself and keep data.download=false."
            ) from err
        log.info("downloading %s into %s", self.name, self.directory.resolve())
        getattr(torchvision.datasets, self.folder)(str(self.root), train=True, download=True)

    def _generation_key(self) -> tuple[Any, ...]:
        # Replaced or re-downloaded files must be read again, not served from the cache.
        stats = sorted(
            (str(p), p.stat().st_size, p.stat().st_mtime_ns)
            for p in self._existing_files().values()
        )
        return (*super()._generation_key(), tuple(stats))

    def generate(self) -> tuple[Tensor, Tensor]:
        return self._load("train")

    def generate_test(self) -> tuple[Tensor, Tensor]:
        return self._load("test")

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        files = self.find_files()
        images_path, labels_path = (files[name] for name in SPLIT_FILES[split])
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise IdxFormatError(
                f"{images_path}: expected uint8 images of shape (n, {self.image_shape[0]}, "
                f"{self.image_shape[1]}), got {images.dtype} of shape {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
            raise IdxFormatError(
                f"{labels_path}: expected {len(images)} uint8 labels (one per image in "
                f"{images_path.name}), got {labels.dtype} of shape {labels.shape}"
            )
        if len(labels) and labels.max() >= self.num_classes:
            raise IdxFormatError(
                f"{labels_path}: labels must be 0..{self.num_classes - 1}, found {labels.max()}"
            )
        x = torch.from_numpy(images).reshape(len(images), -1).float().div_(255.0)
        return x, torch.from_numpy(labels).long()


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: MNIST's format and file names, in ``<root>/FashionMNIST/raw``."""

    folder = "FashionMNIST"
    source = "https://github.com/zalandoresearch/fashion-mnist"

    @property
    def name(self) -> str:
        return "fashion_mnist"
