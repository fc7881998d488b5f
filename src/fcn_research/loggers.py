"""Lightning's TensorBoard logger, flushing its event file at most every few seconds."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger


class TensorBoardLogger(_LightningTensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` whose ``save()`` (an event-file flush
    plus two file-system checks) runs at most every ``flush_interval_s`` seconds.

    Lightning calls ``save()`` after every ``log_metrics``: twice an epoch here, ~3 % of a
    small network's run on digits' 23-step epochs. TensorBoard watching a live run sees new
    points at most ``flush_interval_s`` late; ``finalize`` (end of fit) always flushes.

    Args:
        flush_interval_s: the least time between two flushes; 0 flushes on every save.
        **kwargs: passed to Lightning's ``TensorBoardLogger``.
    """

    def __init__(self, *args: Any, flush_interval_s: float = 2.0, **kwargs: Any) -> None:
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s}")
        super().__init__(*args, **kwargs)
        self.flush_interval_s = flush_interval_s
        self._saved_at = -float("inf")

    def save(self) -> None:
        now = time.monotonic()
        if now - self._saved_at >= self.flush_interval_s:
            self._saved_at = now
            super().save()

    def finalize(self, status: str) -> None:
        self._saved_at = -float("inf")  # the last points always reach the file
        super().finalize(status)
