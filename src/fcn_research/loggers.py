"""A run's loggers: which belong to which member of a stack, and Lightning's TensorBoard logger
flushing its event file at most every few seconds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from fcn_research.tensorboard_adapter import write_scalars


def member_loggers(trainer: L.Trainer, members: int | None = None) -> list[list[Logger]]:
    """Per member of the stack, its own loggers (they write its run): the trainer's loggers
    come member by member, each member with the same set (a single run: all of them).
    ``members`` defaults to the module's (``FCNModule.members``; 1 for any other module)."""
    if members is None:
        members = getattr(trainer.lightning_module, "members", 1)
    loggers = trainer.loggers
    per = len(loggers) // members
    return [loggers[m * per : (m + 1) * per] for m in range(members)]


def log_member_metrics(
    trainer: L.Trainer, values: list[dict[str, float]], steps: list[int | None]
) -> None:
    """Member m's ``values[m]`` into each of its loggers (``log_metrics``) at ``steps[m]``;
    nothing for a member whose step is None or whose values are empty. Lightning's loggers
    write on rank 0 only."""
    for loggers, metrics, step in zip(
        member_loggers(trainer, len(values)), values, steps, strict=True
    ):
        if step is not None and metrics:
            for logger in loggers:
                logger.log_metrics(metrics, step=step)


class TensorBoardLogger(_LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` whose ``save()`` (an event-file flush
    plus two file-system checks) runs at most every ``flush_interval_s`` seconds, and which
    writes the ``epoch`` Lightning adds to each record once per step. A record of plain
    numbers is written as one TensorBoard record (Lightning's writes one per tag), with the
    values ``add_scalar`` would write.

    Lightning calls ``save()`` after every ``log_metrics``: twice an epoch here, a file write
    each time, which short epochs of a small network feel. TensorBoard watching a live run sees new
    points at most ``flush_interval_s`` late; ``finalize`` (end of fit) always flushes.

    Args:
        flush_interval_s: the least time between two flushes; 0 flushes on every save.
        **kwargs: passed to Lightning's ``TensorBoardLogger``.
    """

    def __init__(self, *args: Any, flush_interval_s: float = 2.0, **kwargs: Any) -> None:
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s}")
        super().__init__(*args, **kwargs)
        # A prefix is joined to the tags by Lightning's own log_metrics: it keeps that path.
        self._one_record = not kwargs.get("prefix")
        self.flush_interval_s = flush_interval_s
        self._saved_at = -float("inf")
        self._epoch_step: int | None = None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        # Lightning adds the epoch to every record: the train and validation records of an
        # epoch's end (and the test's, counting the epochs done) would give `epoch` several
        # points at one step. The first, the epoch that ended there, is kept.
        if "epoch" in metrics and step is not None:
            if step == self._epoch_step:
                metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            self._epoch_step = step
        if not metrics:
            return
        numbers = {k: _number(v) for k, v in metrics.items()}
        if self._one_record and step is not None and None not in numbers.values():
            write_scalars(self.experiment, numbers, step)
        else:
            super().log_metrics(metrics, step)

    def save(self) -> None:
        now = time.monotonic()
        if now - self._saved_at >= self.flush_interval_s:
            self._saved_at = now
            super().save()

    def finalize(self, status: str) -> None:
        self._saved_at = -float("inf")  # the last points always reach the file
        super().finalize(status)


def _number(value: Any) -> float | None:
    """A plain number or one-element tensor as a float, as ``add_scalar`` reads it; else None."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
