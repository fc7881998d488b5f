"""The TensorBoard logger flushes at most every flush_interval_s, and always at the end."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.loggers import TensorBoardLogger


def _logger_counting_flushes(tmp_path, interval: float) -> tuple[TensorBoardLogger, list[int]]:
    logger = TensorBoardLogger(tmp_path, name="", version="", flush_interval_s=interval)
    flushes: list[int] = []
    writer = logger.experiment
    original = writer.flush

    def counting() -> None:
        flushes.append(1)
        original()

    writer.flush = counting
    return logger, flushes


def test_flushes_at_most_every_interval_and_at_the_end(tmp_path):
    logger, flushes = _logger_counting_flushes(tmp_path, interval=3600)
    for step in range(5):
        logger.log_metrics({"val/loss": 1.0 / (step + 1)}, step=step)
        logger.save()  # what Lightning does after every log_metrics
    assert len(flushes) == 1  # the first save; the next four fall inside the hour
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [0, 1, 2, 3, 4]
    assert (tmp_path / "hparams.yaml").exists()


def test_zero_interval_flushes_on_every_save(tmp_path):
    logger, flushes = _logger_counting_flushes(tmp_path, interval=0)
    for step in range(3):
        logger.log_metrics({"train/loss": float(step)}, step=step)
        logger.save()
    assert len(flushes) == 3


def test_negative_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="flush_interval_s must be >= 0, got -1"):
        TensorBoardLogger(tmp_path, flush_interval_s=-1)
