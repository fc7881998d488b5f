"""Sweep directory -> ``<sweep>/report/``: a CSV of every job, a markdown pivot, PNG figures.

How a sweep is summarised (also written at the top of ``summary.md``):

- The swept axes come from ``multirun.yaml`` (comma lists, ``range(...)``, sweeper params) and
  from any override whose value differs between jobs. ``seed`` is the replicate axis: it is
  averaged over, never plotted.
- A *configuration* is one value of every other axis. Its cell shows mean ± sample std (n-1)
  over the seeds whose job **completed**, and n; diverged, failed, running and missing jobs,
  and completed ones whose value is NaN or inf (null in result.json), are not averaged but
  counted in the cell, so nothing is silently dropped.
- Pivots and heatmaps span the two axes with the most values (ties: sweep order; rows first
  in sweep order). Every further axis is a facet: one table and one heatmap panel per value
  combination. A single-axis sweep gives a one-column pivot.
- An axis whose values are numbers lists them in numeric order (2, 3, 10, not 10, 2, 3), in
  tables, heatmaps and legends alike; other values keep their sweep order.
- Figures use scales a reader can trust: accuracy colours run from chance (1/num_classes of
  the sweep's data) to 1, fractions from 0 to 1, other metrics from 0 (or their minimum, if
  negative) to their maximum, or log over their data range when a ratio spans decades; each
  heatmap's title says its scale and whether cells average several seeds.
- Jobs named in ``multirun.yaml`` but without a directory are ``not started``; a directory
  without ``result.json`` is ``missing`` (interrupted, or not yet written).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import os
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.utils import get_class
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from fcn_research.results import read_result

REPORT_DIR = "report"
MULTIRUN_FILE = "multirun.yaml"
REPLICATE_AXIS = "seed"
VAL_METRICS = ("val/acc", "val/mse", "val/loss")
INSTRUMENT_METRICS = ("neurons/dead_fraction", "grad_norm/ratio_first_last")
MISSING = "missing"  # a job dir without result.json
NOT_STARTED = "not started"  # in multirun.yaml, but no job dir
DASH = "–"
NON_FINITE = "NaN/inf"  # a completed job whose metric is NaN or inf (null in result.json)
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
GRAD_NORM_LAYER = re.compile(r"^grad_norm/layer_(\d+)$")
DEAD_LAYER = re.compile(r"^neurons/dead_fraction/layer_(\d+)$")

_PARSER = OverridesParser.create()


class NotASweepError(ValueError):
    """The path given is not a Hydra multirun directory."""


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


def _parse(line: str) -> Override | None:
    try:
        return _PARSER.parse_override(str(line))
    except HydraException:
        return None


def _canonical(key: str, value: str) -> str:
    # "depth=2" and "depth=02", "x=false" and "x=False" name the same job.
    override = _parse(f"{key}={value}")
    return str(override.value()) if override is not None else value


def _override_values(lines: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        override = _parse(line)
        if override is not None and not override.is_sweep_override():
            out[override.key_or_group] = str(override.value())
    return out


def _swept_axes(multirun: Path) -> tuple[dict[str, list[str]], bool]:
    """Swept keys and their values from ``multirun.yaml``; False if some cannot be listed."""
    cfg = OmegaConf.load(multirun)
    lines = [str(x) for x in OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []]
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    lines += [f"{k}={v}" for k, v in params.items()]
    axes: dict[str, list[str]] = {}
    enumerable = True
    for line in lines:
        override = _parse(line)
        if override is None or not override.is_sweep_override():
            continue
        key = override.key_or_group
        try:  # interval() sweeps (Optuna, Nevergrad) have no finite list of values
            axes[key] = [_canonical(key, s) for s in override.sweep_string_iterator()]
        except (HydraException, TypeError, ValueError):
            axes[key] = []
            enumerable = False
    return axes, enumerable


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
    swept, enumerable = _swept_axes(path / MULTIRUN_FILE)

    jobs: list[Job] = []
    for job_dir in sorted(p for p in path.iterdir() if p.is_dir() and p.name != REPORT_DIR):
        result = read_result(job_dir)
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        if result is not None:
            values = _override_values(result.get("overrides") or [])
            status = str(result.get("status", MISSING))
        elif overrides_file.is_file() or any(job_dir.glob("events.out.tfevents.*")):
            overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
            values = _override_values(overrides) or _dirname_values(job_dir.name)
            status = MISSING
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


def _metric_order(key: str) -> tuple[int, str]:
    rank = 0 if key.startswith("val/") else 1 if key.startswith("train/") else 2
    return (rank, key)


def summary_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job: job, status, overrides, hparams, final metrics, ``init:`` metrics, time."""
    hparams = list(dict.fromkeys(k for j in sweep.jobs for k in j.result.get("hparams") or {}))
    sections = {
        s: sorted({k for j in sweep.jobs for k in j.result.get(s) or {}}, key=_metric_order)
        for s in ("metrics", "init")
    }
    rows = []
    for job in sweep.jobs:
        res = job.result
        row: dict[str, Any] = {
            "job": job.name,
            "status": job.status,
            "overrides": " ".join(
                res.get("overrides") or [f"{k}={v}" for k, v in job.values.items()]
            ),
        }
        row.update({k: (res.get("hparams") or {}).get(k) for k in hparams})
        row.update({k: (res.get("metrics") or {}).get(k) for k in sections["metrics"]})
        row.update({f"init:{k}": (res.get("init") or {}).get(k) for k in sections["init"]})
        row.update({k: res.get(k) for k in ("epochs", "wall_s", "error")})
        rows.append(row)
    return rows


def fmt(value: float | None) -> str:
    """A number for a table: 3 decimals in [1e-3, 1e4), scientific outside, ``–`` for none."""
    if value is None or not math.isfinite(value):
        return DASH
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3f}"
    return f"{value:.2e}"


@dataclass
class Cell:
    """The jobs of one configuration for one metric: completed values, the others counted."""

    values: list[float] = field(default_factory=list)
    others: Counter[str] = field(default_factory=Counter)

    @property
    def mean(self) -> float | None:
        """Mean over the completed jobs, or None."""
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n-1), or None for fewer than two values."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self) -> str:
        """``0.812 ± 0.010 (n=2, 1 diverged)``; ``–`` when there is nothing to show."""
        notes = [f"{n} {status}" for status, n in sorted(self.others.items())]
        if not self.values:
            return ", ".join(notes) or DASH
        mean = fmt(self.mean) + (f" ± {fmt(self.std)}" if self.std is not None else "")
        return f"{mean} ({', '.join([f'n={len(self.values)}', *notes])})"


def cells(sweep: Sweep, metric: str) -> dict[tuple[str, ...], Cell]:
    """Per configuration: completed jobs' final ``metric``; other statuses and NaN/inf counted."""
    out = {config: Cell() for config in sweep.configs()}
    for job in sweep.jobs:
        cell = out.setdefault(sweep.config_of(job), Cell())
        value = job.value(metric)
        if job.status != "completed":
            cell.others[job.status] += 1
        elif value is not None:
            cell.values.append(value)
        elif metric in (job.result.get("metrics") or {}):
            cell.others[NON_FINITE] += 1
    return out


def layout(sweep: Sweep) -> tuple[list[str], list[str]]:
    """(pivot axes, facet axes): the two config axes with most values, then the rest."""
    ranked = sorted(sweep.config_axes, key=lambda a: -len(sweep.axes[a]))[:2]
    main = [a for a in sweep.config_axes if a in ranked]
    return main, [a for a in sweep.config_axes if a not in main]


@dataclass
class Pivot:
    """One facet of one metric: rows x columns of Cells."""

    title: str
    row_axis: str
    rows: list[str]
    columns: list[str]
    cells: list[list[Cell]]


def pivots(sweep: Sweep, metric: str) -> list[Pivot]:
    """The metric's pivot tables, one per facet (see the module docstring)."""
    by_config = cells(sweep, metric)
    main, facets = layout(sweep)
    row_axis = main[0] if main else ""
    rows = sweep.axes[row_axis] if main else ["all"]
    columns = sweep.axes[main[1]] if len(main) == 2 else [metric]
    out = []
    for facet in itertools.product(*(sweep.axes[a] for a in facets)):
        fixed = dict(zip(facets, facet, strict=True))
        grid = []
        for r in rows:
            line = []
            for c in columns:
                values = {**fixed, **dict(zip(main, (r, c)[: len(main)], strict=True))}
                line.append(by_config.get(tuple(values[a] for a in sweep.config_axes), Cell()))
            grid.append(line)
        title = ", ".join(f"{a}={v}" for a, v in fixed.items())
        header = f"{row_axis} \\ {main[1]}" if len(main) == 2 else row_axis or "sweep"
        out.append(Pivot(title, header, rows, columns, grid))
    return out


def report_metrics(sweep: Sweep) -> list[str]:
    """The validation metric (acc, else mse, else loss) and the instrument summaries."""
    present = {k for job in sweep.jobs for k in job.result.get("metrics") or {}}
    val = next((m for m in VAL_METRICS if m in present), VAL_METRICS[0])
    return [val, *INSTRUMENT_METRICS]


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text.encode()))


def _save(fig: Figure, path: Path) -> None:
    _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def chance_level(sweep: Sweep) -> float | None:
    """1/num_classes of the sweep's classification data (the lowest if jobs differ), or None.

    Read from each job's ``.hydra/config.yaml`` (``data._target_``); only this package's own
    datamodules are imported, so a report never runs code a sweep did not come with.
    """
    levels: set[float] = set()
    targets = set()
    for job in sweep.jobs:
        config = job.path / ".hydra" / "config.yaml" if job.path else None
        if config is not None and config.is_file():
            targets.add(OmegaConf.select(OmegaConf.load(config), "data._target_", default=None))
    for target in targets:
        if not isinstance(target, str) or not target.startswith("fcn_research."):
            continue
        try:
            cls = get_class(target)
        except (ImportError, ValueError):
            continue
        classes = getattr(cls, "num_classes", None)
        if getattr(cls, "task", None) != "regression" and isinstance(classes, int):
            levels.add(1 / max(classes, 2))  # binary datamodules say 1 or 2 classes
    return min(levels) if levels else None


def _accuracy_floor(sweep: Sweep, low: float) -> tuple[float, str]:
    """Where an accuracy scale starts: chance (0 if unknown), lower if the data go below it."""
    chance = chance_level(sweep)
    bottom = min(low, 0.0 if chance is None else chance)
    return bottom, fmt(bottom) + (" = chance" if chance is not None and bottom == chance else "")


def colour_scale(sweep: Sweep, metric: str, finite: Sequence[float]) -> tuple[Normalize, str]:
    """The heatmap's colour scale (see the module docstring) and the words that state it."""
    low, high = min(finite), max(finite)
    if metric.endswith("/acc"):
        bottom, named = _accuracy_floor(sweep, low)
        return Normalize(bottom, 1.0), f"colour scale {named} to 1"
    if metric.startswith("neurons/"):
        return Normalize(0.0, 1.0), "colour scale 0 to 1"
    if "ratio" in metric and low > 0 and high / low > 100:
        return LogNorm(low, high), f"log colour scale {fmt(low)} to {fmt(high)} (data range)"
    if low >= 0:
        return Normalize(0.0, high or 1.0), f"colour scale 0 to {fmt(high or 1.0)}"
    return Normalize(low, high), f"colour scale {fmt(low)} to {fmt(high)} (data range)"


def over_seeds(sweep: Sweep, statistic: str = "mean ± std") -> str:
    """``mean ± std over 3 seeds`` when the sweep has several seeds, else ``one seed``."""
    seeds = len(sweep.axes.get(REPLICATE_AXIS, []))
    return f"{statistic} over {seeds} {REPLICATE_AXIS}s" if seeds > 1 else f"one {REPLICATE_AXIS}"


def heatmap(sweep: Sweep, metric: str, path: Path) -> str | None:
    """Heatmap of the metric's pivots (one panel per facet); a note instead if it has no data."""
    panels = pivots(sweep, metric)
    finite = [c.mean for p in panels for row in p.cells for c in row if c.mean is not None]
    if not finite:
        return f"heatmap of {metric}: skipped, no completed job reports it"
    norm, scale = colour_scale(sweep, metric, finite)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    first = panels[0]
    size = (1.6 + 1.5 * len(first.columns), 1.0 + 0.8 * len(first.rows))
    fig = Figure(figsize=(size[0] * ncols + 1, size[1] * nrows), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, panel in zip(axs.flat, panels, strict=False):
        grid = [[c.mean if c.mean is not None else math.nan for c in row] for row in panel.cells]
        image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(panel.columns)), panel.columns)
        ax.set_yticks(range(len(panel.rows)), panel.rows)
        ax.set_ylabel(panel.row_axis.split(" \\ ")[0])
        if " \\ " in panel.row_axis:
            ax.set_xlabel(panel.row_axis.split(" \\ ")[1])
        ax.set_title(panel.title, fontsize=9)
        for (i, j), cell in ((ij, panel.cells[ij[0]][ij[1]]) for ij in _indices(grid)):
            ax.text(
                j,
                i,
                cell.text().replace(" (", "\n("),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if cell.mean is None or norm(cell.mean) > 0.5 else "white",
            )
    for ax in list(axs.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axs, label=metric)
    fig.suptitle(f"{metric}: final, {over_seeds(sweep)}, n per cell; {scale}")
    _save(fig, path)
    return None


def _indices(grid: list[list[float]]) -> list[tuple[int, int]]:
    return [(i, j) for i, row in enumerate(grid) for j in range(len(row))]


def line_styles(n: int) -> list[dict[str, Any]]:
    """``n`` distinct (colour, line style, marker) keyword sets: 10 colours x 4 styles x 6 markers.

    The first 10 differ by colour alone; after 240 the combinations repeat.
    """
    colours = colormaps["tab10"].colors
    return [
        {
            "color": colours[i % len(colours)],
            "linestyle": LINE_STYLES[i // len(colours) % len(LINE_STYLES)],
            "marker": MARKERS[i // (len(colours) * len(LINE_STYLES)) % len(MARKERS)],
        }
        for i in range(n)
    ]


def _layer_profiles(
    sweep: Sweep, pattern: re.Pattern[str], section: str, statuses: set[str] | None
) -> dict[str, tuple[dict[int, float], int]]:
    """Per configuration label: (layer -> mean over seeds of the per-layer keys, n jobs)."""
    collected: dict[str, dict[int, list[float]]] = {}
    for job in sweep.jobs:
        if statuses is not None and job.status not in statuses:
            continue
        for key in job.result.get(section) or {}:
            match = pattern.match(key)
            v = job.value(key, section)
            if match and v is not None:
                layers = collected.setdefault(sweep.label(sweep.config_of(job)), {})
                layers.setdefault(int(match.group(1)), []).append(v)
    order = [sweep.label(c) for c in sweep.configs()]
    return {
        label: (
            {layer: statistics.fmean(vs) for layer, vs in sorted(collected[label].items())},
            max(len(vs) for vs in collected[label].values()),
        )
        for label in sorted(collected, key=lambda x: order.index(x) if x in order else len(order))
    }


def layer_profile(
    sweep: Sweep,
    path: Path,
    *,
    pattern: re.Pattern[str],
    section: str,
    statuses: set[str] | None,
    ylabel: str,
    title: str,
    log: bool,
    ylim: tuple[float, float] | None = None,
) -> str | None:
    """One line per configuration over the layer index; a note instead if no job has the keys.

    ``ylim`` fixes the y range (a fraction: 0 to 1) so that small differences look small.
    """
    profiles = _layer_profiles(sweep, pattern, section, statuses)
    if not profiles:
        keys = pattern.pattern.strip("^$").replace(r"(\d+)", "XX")
        return f"{title}: skipped, no job has {keys} in `{section}`"
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for (label, (layers, n)), style in zip(
        profiles.items(), line_styles(len(profiles)), strict=True
    ):
        points = [(k, v) for k, v in layers.items() if v > 0 or not log]
        ax.plot([k for k, _ in points], [v for _, v in points], label=f"{label} (n={n})", **style)
    if log:
        ax.set_yscale("log")
    if ylim is not None:
        margin = 0.02 * (ylim[1] - ylim[0])
        ax.set_ylim(ylim[0] - margin, ylim[1] + margin)
    ax.set_xlabel("layer (1 = input side)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}, {over_seeds(sweep, 'mean')}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    return None


def read_curves(job_dir: Path, tags: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """Scalar curves (step, value) of ``tags`` from the job's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    skip = {k: 1 for k in ("images", "audio", "histograms", "compressedHistograms", "tensors")}
    events = EventAccumulator(str(job_dir), size_guidance={"scalars": 0, **skip})
    events.Reload()
    present = set(events.Tags().get("scalars", []))
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags if t in present}


def val_curves(sweep: Sweep, path: Path) -> str | None:
    """Validation curves, one style per configuration (a line per seed) over the optimizer step."""
    curves = {job.name: read_curves(job.path, VAL_METRICS) for job in sweep.jobs if job.path}
    tags = [t for t in VAL_METRICS if any(t in c for c in curves.values())]
    if not tags:
        return "validation curves: skipped, no job has val/* scalars in its TensorBoard events"
    by_label: dict[str, list[Job]] = {sweep.label(c): [] for c in sweep.configs()}
    for job in sweep.jobs:
        by_label.setdefault(sweep.label(sweep.config_of(job)), []).append(job)
    styles = dict(zip(by_label, line_styles(len(by_label)), strict=True))
    fig = Figure(figsize=(5 * len(tags) + 2.5, 4), layout="constrained")
    axs = fig.subplots(1, len(tags), squeeze=False)[0]
    for ax, tag in zip(axs, tags, strict=True):
        for label, jobs in by_label.items():
            runs = [p for p in (curves.get(j.name, {}).get(tag) for j in jobs) if p]
            for i, points in enumerate(runs):
                ax.plot(
                    *zip(*points, strict=True),
                    lw=1.2,
                    markersize=3,
                    alpha=0.8,
                    label=f"{label} (n={len(runs)})" if i == 0 else None,
                    **styles[label],
                )
        title = tag
        if tag.endswith("/acc"):  # a fixed scale: a 2-point spread must not fill the axis
            low = min(float(v) for line in ax.get_lines() for v in line.get_ydata())
            bottom, named = _accuracy_floor(sweep, low)
            ax.set_ylim(bottom - 0.02 * (1 - bottom), 1 + 0.02 * (1 - bottom))
            title += f" (y from {named} to 1)"
        ax.set_xlabel("optimizer step (trainer.global_step)")
        ax.set_title(title)
    axs[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    return None


@dataclass
class Report:
    """What ``write_report`` produced: the tables (for printing), files and skip notes."""

    sweep: Sweep
    tables: dict[str, list[Pivot]]
    files: list[Path]
    notes: list[str]


def _md_escape(text: object) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _empty(tables: list[Pivot]) -> bool:
    return all(c.mean is None for p in tables for row in p.cells for c in row)


def _markdown_table(pivot: Pivot) -> list[str]:
    lines = [
        "| " + " | ".join([pivot.row_axis, *pivot.columns]) + " |",
        "|" + "---|" * (len(pivot.columns) + 1),
    ]
    lines += [
        "| " + " | ".join([r, *(c.text() for c in row)]) + " |"
        for r, row in zip(pivot.rows, pivot.cells, strict=True)
    ]
    return lines


def markdown(report: Report) -> str:
    """``summary.md``: how to read it, a pivot per metric (and facet), figures, unfinished jobs."""
    sweep = report.sweep
    main, facets = layout(sweep)
    counts = Counter(job.status for job in sweep.jobs)
    axes = "; ".join(f"{a} ({', '.join(v)})" for a, v in sweep.axes.items()) or "none"
    lines = [
        f"# Sweep report: {sweep.path}",
        "",
        f"{len(sweep.jobs)} jobs: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f". Axes: {axes}. Every job is a row of [summary.csv](summary.csv).",
        "",
        f"Cells: final value, mean ± sample std (n-1) over `{REPLICATE_AXIS}` of the completed "
        "jobs, and n (how many); jobs diverged, failed, running, missing (no result.json) or "
        f"not started, and completed jobs whose value is NaN or inf ({NON_FINITE}), are "
        "counted in brackets, not averaged.",
    ]
    if main:
        lines.append(
            f"Rows: `{main[0]}`"
            + (f"; columns: `{main[1]}`" if len(main) > 1 else "")
            + " (the swept axes with the most values)."
        )
    if facets:
        lines.append(
            f"One table (and heatmap panel) per value of {', '.join(f'`{a}`' for a in facets)}."
        )
    for metric, tables in report.tables.items():
        lines += ["", f"## {metric}"]
        if _empty(tables):
            lines += ["", f"{DASH} (no completed job reports `{metric}`)"]
            continue
        for pivot in tables:
            lines += [
                "",
                *([f"### {pivot.title}", ""] if pivot.title else []),
                *_markdown_table(pivot),
            ]
    lines += ["", "## Figures", ""]
    lines += [f"- ![{p.stem}]({p.name})" for p in report.files if p.suffix == ".png"]
    lines += [f"- {note}" for note in report.notes]
    unfinished = [j for j in sweep.jobs if j.status != "completed"]
    if unfinished:
        lines += ["", "## Jobs not completed", "", "| job | status | error |", "|---|---|---|"]
        lines += [
            f"| {j.name} | {j.status} | {_md_escape(j.result.get('error'))} |" for j in unfinished
        ]
    return "\n".join(lines) + "\n"


def write_report(sweep_dir: str | os.PathLike[str]) -> Report:
    """Read the sweep and write ``summary.csv``, ``summary.md`` and the PNGs into ``report/``."""
    sweep = load_sweep(sweep_dir)
    out = sweep.path / REPORT_DIR
    out.mkdir(exist_ok=True)
    metrics = report_metrics(sweep)
    report = Report(sweep, {m: pivots(sweep, m) for m in metrics}, [], [])

    rows = summary_rows(sweep)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["job", "status"])
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / "summary.csv", buffer.getvalue())
    report.files.append(out / "summary.csv")

    figures: list[tuple[str, Callable[[Path], str | None]]] = [
        (f"heatmap_{_slug(m)}.png", lambda p, m=m: heatmap(sweep, m, p)) for m in metrics
    ]
    figures += [
        (
            "grad_norm_init.png",
            lambda p: layer_profile(
                sweep,
                p,
                pattern=GRAD_NORM_LAYER,
                section="init",
                statuses=None,
                log=True,
                ylabel="‖∂L/∂W‖ at step 0",
                title="gradient norm per layer at initialization",
            ),
        ),
        (
            "dead_fraction_final.png",
            lambda p: layer_profile(
                sweep,
                p,
                pattern=DEAD_LAYER,
                section="metrics",
                statuses={"completed"},
                log=False,
                ylim=(0.0, 1.0),
                ylabel="dead fraction",
                title="dead units per hidden layer at the end",
            ),
        ),
        ("val_curves.png", lambda p: val_curves(sweep, p)),
    ]
    for name, draw in figures:
        note = draw(out / name)
        if note:
            report.notes.append(note)
        else:
            report.files.append(out / name)
    _write_text(out / "summary.md", markdown(report))
    report.files.insert(1, out / "summary.md")
    return report


def print_report(report: Report, console: Console | None = None) -> None:
    """The pivots as rich tables, then the skip notes and where the files are."""
    console = console or Console()
    for metric, tables in report.tables.items():
        if _empty(tables):
            console.print(f"{metric}: {DASH} (no completed job reports it)")
            continue
        for pivot in tables:
            table = Table(title=f"{metric}" + (f" · {pivot.title}" if pivot.title else ""))
            for header in [pivot.row_axis, *pivot.columns]:
                table.add_column(header)
            for r, row in zip(pivot.rows, pivot.cells, strict=True):
                table.add_row(r, *(c.text() for c in row))
            console.print(table)
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    console.print(f"report written to {report.files[0].parent}/")
    for path in report.files:
        console.print(f"  {path.name}")


def main(argv: Sequence[str] | None = None) -> int:
    """``fcn-report <sweep_dir>``: write the sweep's report and print its tables."""
    parser = argparse.ArgumentParser(prog="fcn-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun directory, e.g. outputs/sweeps/<time>")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.sweep_dir)
    except NotASweepError as err:
        print(f"fcn-report: error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    return 0
