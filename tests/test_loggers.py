"""The TensorBoard logger flushes at most every flush_interval_s, and always at the end; every
instrument's scalars reach every logger of a run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from fcn_research.loggers import TensorBoardLogger
from fcn_research.train import train_stack


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


# A CSV logger beside TensorBoard, as a user adds one on the command line.
CSV_LOGGER = [
    "+logger.csv._target_=lightning.pytorch.loggers.CSVLogger",
    "+logger.csv.save_dir=${output_dir}",
    "+logger.csv.name=csv",
]

# The instruments that are off by default, on.
EVERY_INSTRUMENT = [
    "+callbacks.jacobian._target_=fcn_research.callbacks.JacobianSpectrum",
    "+callbacks.sparsity._target_=fcn_research.callbacks.WeightSparsity",
]


def _csv_points(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Per tag, the (step, value) points of the run's ``metrics.csv``, in order."""
    (path,) = run.glob("csv/*/metrics.csv")
    points: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for tag, value in row.items():
                if tag != "step" and value != "":
                    points.setdefault(tag, []).append((int(row["step"]), float(value)))
    return points


def _tensorboard_points(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


@pytest.mark.parametrize("members", [1, 2])
def test_every_instruments_scalars_reach_a_csv_logger_beside_tensorboard(
    make_cfg, tmp_path, members
):
    """Each member's CSV file holds every scalar of its TensorBoard run, at the same steps
    with the same values (TensorBoard keeps float32)."""
    runs = [tmp_path / f"member_{m}" for m in range(members)]
    cfgs = [
        make_cfg(
            "data.num_samples=200",
            f"seed={m}",
            *EVERY_INSTRUMENT,
            *CSV_LOGGER,
            output_dir=run,
        )
        for m, run in enumerate(runs)
    ]
    results = train_stack(cfgs)
    assert [r["status"] for r in results] == ["completed"] * members
    for run in runs:
        tensorboard, csv_points = _tensorboard_points(run), _csv_points(run)
        prefixes = {tag.split("/")[0] for tag in tensorboard}
        assert {"grad_norm", "grad_rms", "neurons", "activations", "theory"} <= prefixes
        assert {"jacobian", "pruning"} <= prefixes
        # Lightning adds `epoch` to each of its records; TensorBoard keeps one a step.
        assert set(csv_points) == set(tensorboard)
        for tag, points in tensorboard.items():
            ours = csv_points[tag]
            if tag == "epoch":  # the first of a step's, as TensorBoard keeps it
                ours = sorted(dict(reversed(ours)).items())
            assert [s for s, _ in ours] == [s for s, _ in points], tag
            assert [float(np.float32(v)) for _, v in ours] == [v for _, v in points], tag
    if members == 2:  # each member's own values, not the stack's first member's twice
        first, second = (_csv_points(run)["grad_norm/layer_01"] for run in runs)
        assert first != second


def test_a_stack_members_epoch_end_is_one_tensorboard_event(make_cfg, tmp_path):
    """A stack member's train/* and val/* of an epoch's end go into its run as one event at
    that step (not one each), with the values of its CSV file."""
    runs = [tmp_path / f"member_{m}" for m in range(2)]
    cfgs = [
        make_cfg("data.num_samples=200", f"seed={m}", "callbacks=none", *CSV_LOGGER, output_dir=run)
        for m, run in enumerate(runs)
    ]
    assert [r["status"] for r in train_stack(cfgs)] == ["completed"] * 2
    for run in runs:
        events = [
            e
            for path in sorted(run.glob("events.out.tfevents.*"))
            for e in EventFileLoader(str(path)).Load()
            if any(v.tag == "train/loss" for v in e.summary.value)
        ]
        assert len(events) == 2  # max_epochs=2
        for event in events:
            tags = {v.tag for v in event.summary.value}
            assert {"train/loss", "train/acc", "val/loss", "val/acc", "epoch"} <= tags
        tensorboard, csv_points = _tensorboard_points(run), _csv_points(run)
        assert [s for s, _ in tensorboard["val/loss"]] == [e.step for e in events]
        for tag in ("train/loss", "val/loss", "val/acc"):
            ours = [(s, float(np.float32(v))) for s, v in csv_points[tag]]
            assert ours == tensorboard[tag], tag
