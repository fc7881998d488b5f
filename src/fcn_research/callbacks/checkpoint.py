"""The resume checkpoint: one ``last.ckpt``, rewritten at epoch ends, at most every few seconds."""

from __future__ import annotations

import math
import time
from functools import cached_property

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Keeps ``<dirpath>/last.ckpt`` for resuming: written at an epoch end when at least
    ``min_interval_s`` seconds passed since training started or since the last write, and
    always after the final epoch.

    Short epochs (digits: 23 steps) would otherwise spend ~5% of the run writing checkpoints;
    an interrupted job loses at most ``min_interval_s`` of work, and since training is
    deterministic it resumes to the same result.

    Args:
        dirpath: the checkpoint directory (the job's ``checkpoints/``).
        min_interval_s: the least time between two writes; 0 writes after every epoch.
    """

    def __init__(self, dirpath: str, min_interval_s: float = 10.0) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        # One file, overwritten (Lightning writes `save_last` only beside a top-k save).
        super().__init__(
            dirpath=dirpath,
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            every_n_epochs=1,
        )
        self.min_interval_s = min_interval_s
        self._written_at = -math.inf

    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        # Lightning names the callback on every hook call (ModelCheckpoint builds the string
        # from five attributes each time); they are fixed at __init__, so build it once.
        return super().state_key

    @staticmethod
    def _final_epoch(trainer: L.Trainer) -> bool:
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        return (
            trainer.should_stop
            or 0 <= max_epochs <= trainer.current_epoch + 1
            or 0 <= trainer.max_steps <= trainer.global_step
        )

    def _should_skip_saving_checkpoint(self, trainer: L.Trainer) -> bool:
        if super()._should_skip_saving_checkpoint(trainer):
            return True
        recent = time.monotonic() - self._written_at < self.min_interval_s
        return recent and not self._final_epoch(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # The first write comes min_interval_s into training: a job shorter than that writes
        # one checkpoint, after its last epoch.
        self._written_at = time.monotonic()

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._written_at = time.monotonic()
