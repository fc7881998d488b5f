"""Reading a sweep directory: its axes (from ``multirun.yaml`` and the jobs), jobs and results."""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fcn_research.results import RESULT_FILE, read_result
from fcn_research.stacking import STACKS_DIR
from fcn_research.sweeps import MULTIRUN_FILE, parse_override, swept_axes

REPORT_DIR = "report"
REPLICATE_AXIS = "seed"
MISSING = "missing"  # a job dir without result.json
UNREADABLE = "unreadable"  # a result.json that cannot be parsed (truncated, not JSON)
NOT_STARTED = "not started"  # in multirun.yaml, but no job dir
DASH = "–"


class NotASweepError(ValueError):
    """The path given is not a Hydra multirun directory."""


class ReportOptionError(ValueError):
    """A report option (``--metric``, ``--baseline``, ``--summary``, ``--k``) that does not fit
    the sweep."""


@dataclass
class Job:
    """One job of a sweep: its directory (if any), status, axis values and result."""

    name: str
    status: str
    values: dict[str, str]
    result: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def value(self, key: str, section: str = "metrics") -> float | None:
        """``result[section][key]`` as a finite float, or None."""
        value = (self.result.get(section) or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None


@dataclass
class Sweep:
    """A sweep directory: its axes (name -> ordered values) and its jobs."""

    path: Path
    axes: dict[str, list[str]]
    jobs: list[Job]

    @property
    def config_axes(self) -> list[str]:
        """The axes that tell configurations apart (all but the replicate axis)."""
        return [a for a in self.axes if a != REPLICATE_AXIS]

    def config_of(self, job: Job) -> tuple[str, ...]:
        """The job's configuration: its value on every config axis."""
        return tuple(job.values.get(a, DASH) for a in self.config_axes)

    def configs(self) -> list[tuple[str, ...]]:
        """Every configuration, in axis-value order."""
        return list(itertools.product(*(self.axes[a] for a in self.config_axes)))

    def label(self, config: Sequence[str]) -> str:
        """``activation=relu, depth=3`` (or ``all`` when nothing but seeds is swept)."""
        return ", ".join(f"{a}={v}" for a, v in zip(self.config_axes, config, strict=True)) or "all"


def _override_values(lines: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        override = parse_override(line)
        if override is not None and not override.is_sweep_override():
            out[override.key_or_group] = str(override.value())
    return out


def _dirname_values(name: str) -> dict[str, str]:
    # Hydra's override_dirname: "k=v,k2=v2" (values may hold commas, keys never hold "=").
    return _override_values(re.split(r",(?=[^,=]+=)", name))


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number, value) if math.isfinite(number) else (1, 0.0, value)


def _numbers_first(values: list[str]) -> list[str]:
    """Numbers in numeric order, then the other values in their given order."""
    return sorted(values, key=lambda v: _sort_key(v)[:2])


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read a sweep directory: axes from ``multirun.yaml``, one Job per job dir or expected job."""
    path = Path(path)
    if not (path / MULTIRUN_FILE).is_file():
        what = "does not exist" if not path.exists() else f"has no {MULTIRUN_FILE}"
        raise NotASweepError(
            f"not a sweep directory: {path} ({what}); expected a Hydra multirun directory "
            f"holding {MULTIRUN_FILE} and one job dir per run, such as outputs/sweeps/<time> "
            "made by `python train.py -m key=a,b`"
        )
    swept, enumerable = swept_axes(path / MULTIRUN_FILE)

    jobs: list[Job] = []
    # .stacks/ (launcher=stacked) holds the stacks' manifests; their members are the jobs.
    skipped = (REPORT_DIR, STACKS_DIR)
    for job_dir in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in skipped):
        result = read_result(job_dir)
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        written = (job_dir / RESULT_FILE).is_file()
        if result is not None:
            values = _override_values(result.get("overrides") or [])
            status = str(result.get("status", UNREADABLE))
        elif written or overrides_file.is_file() or any(job_dir.glob("events.out.tfevents.*")):
            overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
            values = _override_values(overrides) or _dirname_values(job_dir.name)
            status = UNREADABLE if written else MISSING
        else:
            continue  # not a job dir
        jobs.append(Job(job_dir.name, status, values, result or {}, job_dir))

    axes = {k: list(dict.fromkeys(v)) for k, v in swept.items()}
    for key in dict.fromkeys(k for job in jobs for k in job.values):
        seen = {job.values.get(key, DASH) for job in jobs}
        if key in axes or len(seen) > 1:
            extra = sorted(seen - set(axes.get(key, [])), key=_sort_key)
            axes[key] = axes.get(key, []) + extra
    axes = {k: _numbers_first(v) for k, v in axes.items()}

    if enumerable and swept:
        done = {tuple(job.values.get(k) for k in swept) for job in jobs}
        for combo in itertools.product(*swept.values()):
            if combo not in done:
                values = dict(zip(swept, combo, strict=True))
                name = ",".join(f"{k}={v}" for k, v in sorted(values.items()))
                jobs.append(Job(name, NOT_STARTED, values))
    return Sweep(path, axes, jobs)


def chance_level(sweep: Sweep) -> float | None:
    """1/num_classes of the sweep's classification data (the lowest if jobs differ), or None.

    From each job's result.json (``task``, ``num_classes``, written by ``train()``): reading
    it needs neither the datamodule's code nor torch.
    """
    levels = {
        1 / max(int(job.result["num_classes"]), 2)  # binary data says 2 classes
        for job in sweep.jobs
        if job.result.get("task") in ("binary", "multiclass")
        and isinstance(job.result.get("num_classes"), int)
    }
    return min(levels) if levels else None
