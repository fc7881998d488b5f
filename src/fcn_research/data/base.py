"""The base datamodule: generate once, split, standardise, keep on the device, slice batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePath
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

Task = Literal["binary", "multiclass", "regression"]

# Generated / loaded datasets by generation key, so later jobs of a sweep skip the work.
# Two entries: a sweep rarely alternates between more datasets, and MNIST is ~200 MB.
_DATA_CACHE: dict[tuple[Any, ...], tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]] = {}
_DATA_CACHE_SIZE = 2
# Base-class settings applied after generation: they don't change what generate() returns.
_SPLIT_AND_BATCHING = frozenset(
    {
        "batch_size",
        "val_fraction",
        "test_fraction",
        "min_batches_per_epoch",
        "standardize",
        "steps_per_batch",
        "shuffle_seeds",
    }
)


# The most elements of the members' permuted copies of the inputs (256 MiB of float32).
_COPY_ELEMENTS = 1 << 26


def check_steps_per_batch(steps: Any) -> int:
    """``steps`` if it is a valid ``steps_per_batch``; else ``ValueError`` (the one place this
    rule is checked: the config checks call it too)."""
    key = "steps_per_batch (mini-batches per Lightning batch)"
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise ValueError(f"{key} must be an integer, got {steps!r}")
    if steps < 1:
        raise ValueError(f"{key} must be >= 1, got {steps!r}")
    return steps


class TensorBatches:
    """An epoch of mini-batches sliced from in-memory tensors (a DataLoader without workers).

    With ``shuffle`` each member of a stack (one per entry of ``seeds``) walks the data in
    its own order, a permutation drawn once per epoch from its seed and the epoch number that
    ``epoch`` returns (so a resumed run sees the same order, and a member sees the order its
    solo job would); a batch is then (x, y) of shape (M, B, ...), member m's rows gathered
    from its permutation. Without ``shuffle`` (validation, test) every member sees the same
    rows and a batch is (x, y) of shape (B, ...). ``min_batches`` repeats the data within one
    epoch, so a tiny dataset (XOR's 4 points) runs many optimizer steps per epoch instead of
    paying Lightning's per-epoch cost every step.
    With ``group`` > 1 it yields lists of up to ``group`` consecutive mini-batches: one
    Lightning batch for several optimizer steps (``steps_per_batch``), the same steps in the
    same order at a fraction of Lightning's per-batch cost.
    Under data parallelism (``rank_world`` returns this process's rank and the world size)
    every rank walks the same batches and keeps every world-th row of each, so the global
    batch is still ``batch_size``; with one process nothing changes.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seeds: Sequence[int] = (0,),
        min_batches: int = 1,
        epoch: Callable[[], int] | None = None,
        rank_world: Callable[[], tuple[int, int]] | None = None,
        group: int = 1,
    ) -> None:
        self.x, self.y = x, y
        self.group = check_steps_per_batch(group)
        self.batch_size = min(batch_size, len(x))
        self.shuffle = shuffle
        self.seeds = list(seeds)
        self.epoch = epoch or (lambda: 0)
        self.rank_world = rank_world or (lambda: (0, 1))
        self.batches_per_pass = -(-len(x) // self.batch_size)
        self.passes = max(1, -(-min_batches // self.batches_per_pass))

    def __len__(self) -> int:
        return -(-self.batches_per_pass * self.passes // self.group)

    def __iter__(self) -> Iterator[Any]:
        if self.group == 1:
            yield from self._batches()
            return
        group: list[tuple[Tensor, Tensor]] = []
        for batch in self._batches():
            group.append(batch)
            if len(group) == self.group:
                yield group
                group = []
        if group:
            yield group

    def _orders(self, generators: list[torch.Generator]) -> Tensor:
        """(M, n): each member's order of the rows for one pass (its solo job's order)."""
        return torch.stack([torch.randperm(len(self.x), generator=g) for g in generators])

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, bs = len(self.x), self.batch_size
        rank, world = self.rank_world()
        generators = [torch.Generator().manual_seed(s * 100_003 + self.epoch()) for s in self.seeds]
        for _ in range(self.passes):
            if not self.shuffle:
                for start in range(0, n, bs):
                    xb, yb = self.x[start : start + bs], self.y[start : start + bs]
                    rows = _rank_rows(len(xb), rank, world) if world > 1 else slice(None)
                    yield xb[rows], yb[rows]
                continue
            if n <= bs:  # one batch holds everything: no order to draw, no copy to make
                members = len(generators)
                xb, yb = self.x.expand(members, *self.x.shape), self.y.expand(members, n)
                if world > 1:
                    rows = _rank_rows(n, rank, world)
                    xb, yb = xb[:, rows], yb[:, rows]
                yield xb, yb
                continue
            order = self._orders(generators).to(self.x.device)
            # Each member's permuted copy once per pass, batches its slices (views): cheaper
            # than a gather per batch, while the copies stay small; else a gather per batch.
            whole = order.numel() * self.x[0].numel() <= _COPY_ELEMENTS
            xs, ys = (self.x[order], self.y[order]) if whole else (None, None)
            for start in range(0, n, bs):
                idx = slice(start, start + bs)
                if world > 1:
                    idx = torch.arange(n)[idx][_rank_rows(min(bs, n - start), rank, world)]
                if whole:
                    yield xs[:, idx], ys[:, idx]
                else:
                    rows = order[:, idx]
                    yield self.x[rows], self.y[rows]


def _on_device(batch: Any, device: torch.device) -> bool:
    """Whether every tensor of a (nested) tuple/list batch already sits on ``device``."""
    if isinstance(batch, Tensor):
        return batch.device == device
    return isinstance(batch, tuple | list) and all(_on_device(b, device) for b in batch)


def _rank_rows(size: int, rank: int, world: int) -> slice:
    """This rank's rows of a batch of ``size``: every world-th one (all of them for one rank)."""
    if size < world:  # a short tail batch: every rank still takes a step, or DDP would hang
        return slice(rank % size, rank % size + 1)
    return slice(rank, None, world)


class InMemoryDataModule(L.LightningDataModule):
    """Base class: subclasses implement ``generate()`` and set ``task`` / ``num_classes``.

    ``seed`` is the data seed: it fixes what ``generate()`` draws and the train/val/test split.
    The mini-batch order is the network's randomness, seeded by ``shuffle_seeds`` (the
    run's ``seed``, one per member of a stack, set by ``train.build``), so a sweep over
    ``seed`` keeps the dataset.
    ``val_fraction`` of the samples go to validation; ``val_fraction=0``
    validates on the training set itself, as the notebook does for XOR's four points.
    A dataset with an official test split returns it from ``generate_test()``; it is kept
    apart as ``x_test`` / ``y_test`` (served by ``test_dataloader()``), never split.
    Otherwise ``test_fraction`` of the samples are held out as the test split (0: none).
    Both fractions are of all the samples ``generate()`` returns, drawn from one permutation
    seeded by ``seed``: validation is its first ``val_fraction``, test its last
    ``test_fraction``, training the rest (so the validation samples do not depend on
    ``test_fraction``).
    ``standardize`` centres each input feature on its training mean and divides all features
    by one number, the root-mean-square of their training stds (see ``_build``).
    """

    task: Task = "binary"
    num_classes: int = 2
    # Mini-batches per Lightning batch (the training loop's ``steps_per_batch``).
    steps_per_batch: int = 1
    # Seeds of the training batches' order, one per stack member (the runs' ``seed``;
    # ``seed`` is the data's).
    shuffle_seeds: tuple[int, ...] = (0,)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
        min_batches_per_epoch: int = 1,
        standardize: bool = True,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"test_fraction must be in [0, 1) and leave training samples beside "
                f"val_fraction={val_fraction} (val_fraction + test_fraction < 1), "
                f"got {test_fraction}"
            )
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.min_batches_per_epoch = min_batches_per_epoch
        self.standardize = standardize
        self.x_train: Tensor | None = None
        self.x_test: Tensor | None = None
        self.y_test: Tensor | None = None
        self._loaders: dict[str, TensorBatches] = {}

    @property
    def name(self) -> str:
        """A short name for logs and hparams."""
        return type(self).__name__.lower()

    def generate(self) -> tuple[Tensor, Tensor]:
        """Return all samples: float inputs (n, features) and targets."""
        raise NotImplementedError

    def generate_test(self) -> tuple[Tensor, Tensor] | None:
        """Return the official test split (inputs, targets), or None if the dataset has none."""
        return None

    @property
    def num_features(self) -> int:
        """Input width; call ``setup()`` first."""
        return self._require().shape[1]

    @property
    def num_outputs(self) -> int:
        """Output width of the network: 1 for binary and regression, else the class count."""
        return self.num_classes if self.task == "multiclass" else 1

    def _require(self) -> Tensor:
        if self.x_train is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run yet")
        return self.x_train

    def setup(self, stage: str | None = None) -> None:
        """Generate, split and standardise once; move the tensors to the trainer's device."""
        if self.x_train is None:
            self._build()
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and self.x_train.device != device:
            for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
                if getattr(self, key) is not None:
                    setattr(self, key, getattr(self, key).to(device))
            self._loaders.clear()

    def _generation_key(self) -> tuple[Any, ...]:
        # Everything scalar that configures the datamodule: equal keys generate equal data.
        simple = (int, float, str, bool, type(None), PurePath)
        params = sorted(
            (k, str(v))
            for k, v in vars(self).items()
            if isinstance(v, simple) and k not in _SPLIT_AND_BATCHING
        )
        return (type(self).__module__, type(self).__qualname__, tuple(params))

    def _generate_cached(self) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        # Jobs of a sweep run in one process: generate (or read) each dataset once.
        key = self._generation_key()
        if key not in _DATA_CACHE:
            if len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
                _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
            x, y = self.generate()
            _DATA_CACHE[key] = (x, y, self.generate_test())
        return _DATA_CACHE[key]

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Batches are slices of tensors that already live on the device: nothing to move."""
        if _on_device(batch, device):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _build(self) -> None:
        x, y, test = self._generate_cached()
        n = len(x)
        n_val = round(n * self.val_fraction)
        if self.val_fraction > 0 and (n_val < 1 or n - n_val < 1):
            raise ValueError(
                f"{self.name}: {n} samples are too few for val_fraction={self.val_fraction} "
                f"({n - n_val} train / {n_val} val); use more samples or a val_fraction "
                "that leaves at least one sample on each side (0 validates on the train set)"
            )
        # An official test split (generate_test) replaces the held-out one.
        n_test = round(n * self.test_fraction) if test is None else 0
        if test is None and self.test_fraction > 0 and (n_test < 1 or n - n_val - n_test < 1):
            raise ValueError(
                f"{self.name}: {n} samples are too few for val_fraction={self.val_fraction} "
                f"and test_fraction={self.test_fraction} ({n - n_val - n_test} train / "
                f"{n_val} val / {n_test} test); use more samples or smaller fractions "
                "(test_fraction=0 holds out no test split)"
            )
        generator = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=generator)
        train_idx, val_idx = perm[n_val : n - n_test], perm[:n_val]
        if n_test:
            test_idx = perm[n - n_test :]
            test = (x[test_idx], y[test_idx])
        x_train, y_train = x[train_idx], y[train_idx]
        x_val, y_val = (x[val_idx], y[val_idx]) if n_val else (x_train, y_train)
        if self.standardize:
            # One scale for all features, not one per feature: a pixel that is almost always
            # 0 has a near-zero std, and dividing by it turns its rare ink into values of ~50.
            # Dividing by the root-mean-square std keeps the features' relative scales (the
            # usual "subtract the mean image, divide by one std" for images; the z-score for
            # one feature) and gives the centred training inputs mean square 1, the unit
            # second moment the fan-in initializers assume of a Linear's inputs.
            mean = x_train.mean(0, keepdim=True)
            scale = x_train.var(0, correction=0).mean().sqrt()
            scale = scale if scale > 0 else torch.ones_like(scale)  # all features constant
            x_train, x_val = (x_train - mean) / scale, (x_val - mean) / scale
            if test is not None:
                test = ((test[0] - mean) / scale, test[1])
        self.x_train, self.y_train = x_train.contiguous(), y_train.contiguous()
        self.x_val, self.y_val = x_val.contiguous(), y_val.contiguous()
        if test is not None:
            self.x_test, self.y_test = test[0].contiguous(), test[1].contiguous()

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _rank_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def first_train_batch(self) -> tuple[Tensor, Tensor]:
        """The first mini-batch of epoch 0 (x: (M, B, ...)): the one training's step 0 uses."""
        batch = next(iter(self.train_dataloader()))
        return batch[0] if isinstance(batch, list) else batch

    def train_dataloader(self) -> TensorBatches:
        if "train" not in self._loaders:
            self._loaders["train"] = TensorBatches(
                self.x_train,
                self.y_train,
                self.batch_size,
                shuffle=True,
                seeds=self.shuffle_seeds,
                min_batches=self.min_batches_per_epoch,
                epoch=self._current_epoch,
                rank_world=self._rank_world,
                group=self.steps_per_batch,
            )
        return self._loaders["train"]

    def val_dataloader(self) -> TensorBatches:
        # Validation is one pass in large batches: no gradients, so memory is small.
        if "val" not in self._loaders:
            self._loaders["val"] = TensorBatches(self.x_val, self.y_val, max(self.batch_size, 4096))
        return self._loaders["val"]

    @property
    def has_test(self) -> bool:
        """Whether there is a test split (official, or ``test_fraction`` > 0); after ``setup()``."""
        return self.x_test is not None

    def test_dataloader(self) -> TensorBatches:
        """The test split in large batches: official, or held out by ``test_fraction``."""
        self._require()
        if self.x_test is None:
            raise RuntimeError(
                f"{self.name} has no test split (no official one, and test_fraction=0); "
                "set data.test_fraction > 0 to hold one out"
            )
        if "test" not in self._loaders:
            self._loaders["test"] = TensorBatches(
                self.x_test, self.y_test, max(self.batch_size, 4096)
            )
        return self._loaders["test"]
