"""Which value of a run a cell summarises: the final one, the best epoch's, or the last k epochs'.

``final`` is ``result.json``'s ``metrics`` (the value at the end of training). ``best`` and
``last_k`` need every epoch's value: they are read from the run's TensorBoard events, which
hold every tag of ``result.json`` on the optimizer-step axis, so nothing extra is recorded
and sweeps made before this option work too.

- An epoch is a step where the validation metric was logged (its end). ``best`` is the epoch
  with the highest ``val/acc`` (else the lowest ``val/mse``, else ``val/loss``; the earliest on
  ties), whichever metric is reported: the model a researcher would have kept.
- A test metric (``test/*``) is measured once, after training: under ``best`` it is the run's
  own only where the run tested its best validation epoch's weights (``test_weights=best_val``),
  and n/a for a run that tested its last epoch's.
- ``last_k`` is the mean over the last k epochs (all of them, if the run has fewer).
- A tag logged on the instruments' schedule rather than at epoch ends takes its last value
  logged at or before the epoch's step.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fcn_research.report.loading import Job, ReportOptionError

SUMMARIES = ("final", "best", "last_k")
# The metric that picks the best epoch, in order of preference, and whether higher is better.
SELECTION = (("val/acc", True), ("val/mse", False), ("val/loss", False))
TEST_PREFIX = "test/"
BEST_VAL_WEIGHTS = "test_weights=best_val"
# A cell's count of runs whose test metric is not their best epoch's (they tested the last).
TEST_NOT_AT_BEST = "n/a (last epoch tested)"


def tested_best_val(job: Job) -> bool:
    """Whether the job evaluated its test split on the best validation epoch's weights
    (``test_weights=best_val`` in its ``.hydra/config.yaml``, else in its overrides)."""
    config = job.path / ".hydra" / "config.yaml" if job.path is not None else None
    if config is not None and config.is_file():
        try:
            loaded = yaml.safe_load(config.read_text())
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict):
            return f"test_weights={loaded.get('test_weights')}" == BEST_VAL_WEIGHTS
    return BEST_VAL_WEIGHTS in (job.result.get("overrides") or [])


def read_scalars(job_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the job's TensorBoard events: (step, value), one per step (the
    last written, as after a resume), in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    skip = {k: 1 for k in ("images", "audio", "histograms", "compressedHistograms", "tensors")}
    events = EventAccumulator(str(job_dir), size_guidance={"scalars": 0, **skip})
    events.Reload()
    out = {}
    for tag in events.Tags().get("scalars", []):
        by_step = {e.step: e.value for e in events.Scalars(tag)}
        out[tag] = sorted(by_step.items())
    return out


@dataclass
class Summary:
    """How one run becomes one number: ``final``, ``best`` (epoch) or ``last_k`` (epochs)."""

    kind: str = "final"
    k: int = 3
    _scalars: dict[Path, dict[str, list[tuple[int, float]]]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        if self.kind not in SUMMARIES:
            raise ReportOptionError(
                f"--summary {self.kind}: unknown; choose one of {', '.join(SUMMARIES)}"
            )
        if self.k < 1:
            raise ReportOptionError(f"--k {self.k}: the number of last epochs must be >= 1")

    def describe(self) -> str:
        """A few words for table and figure titles."""
        if self.kind == "best":
            return "best epoch by validation metric"
        if self.kind == "last_k":
            return f"mean of the last {self.k} epochs"
        return "final"

    def not_at_best(self, job: Job, metric: str) -> bool:
        """Under ``best``: ``metric`` is a test metric the job measured on other weights than
        its best epoch's."""
        return self.kind == "best" and metric.startswith(TEST_PREFIX) and not tested_best_val(job)

    def value(self, job: Job, metric: str) -> float | None:
        """The job's summary of ``metric`` as a finite float, or None."""
        if self.kind == "final":
            return job.value(metric)
        if self.kind == "best" and metric.startswith(TEST_PREFIX):
            # Tested once, on the best validation epoch's weights or not at all at best.
            return None if self.not_at_best(job, metric) else job.value(metric)
        if job.path is None:
            return None
        scalars = self._scalars.get(job.path)
        if scalars is None:
            scalars = self._scalars[job.path] = read_scalars(job.path)
        epochs, higher = next(
            ((scalars[t], up) for t, up in SELECTION if scalars.get(t)), (None, True)
        )
        points = scalars.get(metric)
        if not epochs or not points:
            return None
        if self.kind == "best":
            pick = max if higher else min
            chosen = [pick(epochs, key=lambda sv: sv[1])[0]]
        else:
            chosen = [step for step, _ in epochs[-self.k :]]
        steps = [step for step, _ in points]
        values = []
        for step in chosen:
            i = bisect.bisect_right(steps, step) - 1
            if i < 0:
                return None
            values.append(points[i][1])
        value = statistics.fmean(values)
        return value if math.isfinite(value) else None
