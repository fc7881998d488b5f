"""MNIST-1D (Greydanus, "Scaling down deep learning", 2020), generated offline and cached.

The ``mnist1d`` package builds the dataset procedurally (``mnist1d.data.make_dataset`` with
``get_dataset_args()``); its download path (``get_dataset``) is never used, so nothing is
fetched. The generated arrays are cached in ``<cache_dir>/mnist1d/<key>.npz``, keyed by the
generator's arguments, so the jobs of a sweep (and later sweeps) generate them once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fcn_research.data.base import InMemoryDataModule
from fcn_research.results import atomic_path

log = logging.getLogger(__name__)

ARRAYS = ("x", "y", "x_test", "y_test")


class MNIST1D(InMemoryDataModule):
    """MNIST-1D: 40-point 1-D signals of 10 digit templates, padded, translated, sheared, noised.

    The generator's own train/test split (``train_split`` of ``num_samples``; 4000 / 1000 by
    default, the published benchmark's) is kept: its test part is the test split, and
    ``val_fraction`` of its training part validates. ``seed`` is the generator's seed (42,
    the package's default, gives the published dataset) and the train/val split's.
    ``cache_dir`` (null: no disk cache) holds the generated arrays.
    """

    task = "multiclass"
    num_classes = 10

    def __init__(
        self,
        num_samples: int = 5000,
        train_split: float = 0.8,
        corr_noise_scale: float = 0.25,
        iid_noise_scale: float = 2e-2,
        shear_scale: float = 0.75,
        max_translation: int = 48,
        shuffle_seq: bool = False,
        cache_dir: str | Path | None = "~/.cache/fcn_research",
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 42,
        min_batches_per_epoch: int = 1,
        standardize: bool = True,
    ) -> None:
        super().__init__(batch_size, val_fraction, seed, min_batches_per_epoch, standardize)
        if num_samples < 10:
            raise ValueError(f"num_samples must be >= 10 (one per digit), got {num_samples}")
        if not 0.0 < train_split < 1.0:
            raise ValueError(
                f"train_split (the train part of num_samples) must be in (0, 1), got {train_split}"
            )
        for name, value in (
            ("corr_noise_scale", corr_noise_scale),
            ("iid_noise_scale", iid_noise_scale),
            ("shear_scale", shear_scale),
            ("max_translation", max_translation),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.num_samples = num_samples
        self.train_split = train_split
        self.corr_noise_scale = corr_noise_scale
        self.iid_noise_scale = iid_noise_scale
        self.shear_scale = shear_scale
        self.max_translation = max_translation
        self.shuffle_seq = shuffle_seq
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return "mnist1d"

    def generator_args(self) -> dict[str, Any]:
        """``get_dataset_args()`` with this datamodule's settings in place of the defaults."""
        from mnist1d.data import get_dataset_args

        args = get_dataset_args(as_dict=True)
        args.pop("url")  # the download path's; never used here
        args.update(
            num_samples=self.num_samples,
            train_split=self.train_split,
            corr_noise_scale=self.corr_noise_scale,
            iid_noise_scale=self.iid_noise_scale,
            shear_scale=self.shear_scale,
            max_translation=self.max_translation,
            shuffle_seq=self.shuffle_seq,
            seed=self.seed,
        )
        return args

    @property
    def cache_path(self) -> Path | None:
        """Where the arrays for these generator arguments are cached (None: no cache)."""
        if self.cache_dir is None:
            return None
        key = json.dumps(self.generator_args(), sort_keys=True)
        return self.cache_dir / "mnist1d" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def _load_arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            path = self.cache_path
            if path is not None and path.is_file():
                with np.load(path) as cached:
                    self._arrays = {k: cached[k] for k in ARRAYS}
            else:
                self._arrays = self._make()
                if path is not None:
                    # Through a temp file: a concurrent job never reads half a file.
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:
                        np.savez(f, **self._arrays)
                    log.info("mnist1d: generated and cached in %s", path)
        return self._arrays

    def _make(self) -> dict[str, np.ndarray]:
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView

        # make_dataset seeds numpy's and Python's global generators: put them back as they were.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            data = make_dataset(ObjectView({**self.generator_args(), "url": None}))
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        return {k: np.asarray(data[k]) for k in ARRAYS}

    def generate(self) -> tuple[Tensor, Tensor]:
        arrays = self._load_arrays()
        return torch.from_numpy(arrays["x"]).float(), torch.from_numpy(arrays["y"]).long()

    def generate_test(self) -> tuple[Tensor, Tensor]:
        arrays = self._load_arrays()
        return torch.from_numpy(arrays["x_test"]).float(), torch.from_numpy(arrays["y_test"]).long()
