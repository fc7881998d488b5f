"""The report's PNG figures: heatmaps of the pivots, per-layer profiles, validation curves."""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from fcn_research.report.epochs import Summary, read_scalars
from fcn_research.report.loading import REPLICATE_AXIS, Job, Sweep, chance_level
from fcn_research.report.stats import clip_interval, metric_bounds, t_interval
from fcn_research.report.tables import VAL_METRICS, fmt, pivots
from fcn_research.results import atomic_path

LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
GRAD_NORM_LAYER = re.compile(r"^grad_norm/layer_(\d+)$")
DEAD_LAYER = re.compile(r"^neurons/dead_fraction/layer_(\d+)$")


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _accuracy_floor(sweep: Sweep, low: float) -> tuple[float, str]:
    """Where an accuracy scale starts: chance (0 if unknown), lower if the data go below it."""
    chance = chance_level(sweep)
    if chance is None:
        return min(low, 0.0), fmt(min(low, 0.0))
    if low < chance:
        return low, f"{fmt(low)} (below chance, {fmt(chance)})"
    return chance, f"{fmt(chance)} = chance"


def colour_scale(sweep: Sweep, metric: str, finite: Sequence[float]) -> tuple[Normalize, str]:
    """The heatmap's colour scale (see ``fcn_research.report``) and the words that state it."""
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


def heatmap(sweep: Sweep, metric: str, path: Path, summary: Summary | None = None) -> str | None:
    """Heatmap of the metric's pivots (one panel per facet); a note instead if it has no data."""
    summary = summary or Summary()
    panels = pivots(sweep, metric, summary)
    finite = [c.mean for p in panels for row in p.cells for c in row if c.mean is not None]
    if not finite:
        return f"heatmap of {metric}: skipped, no completed job reports it"
    norm, scale = colour_scale(sweep, metric, finite)
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    first = panels[0]
    size = (1.6 + 1.7 * len(first.columns), 1.0 + 1.0 * len(first.rows))
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
                cell.text().replace(" [", "\n[").replace(" (", "\n("),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if cell.mean is None or norm(cell.mean) > 0.5 else "white",
            )
    for ax in list(axs.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axs, label=metric)
    stat = "mean ± std [95 % t-interval]"
    fig.suptitle(f"{metric}: {summary.describe()}, {over_seeds(sweep, stat)}, n per cell; {scale}")
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
    sweep: Sweep,
    pattern: re.Pattern[str],
    section: str,
    statuses: set[str] | None,
    value: Callable[[Job, str], float | None] | None = None,
) -> dict[str, dict[int, list[float]]]:
    """Per configuration label: layer -> the seeds' values of the per-layer keys (the keys
    found in ``section``; values from ``value`` if given, else from that section)."""
    collected: dict[str, dict[int, list[float]]] = {}
    for job in sweep.jobs:
        if statuses is not None and job.status not in statuses:
            continue
        for key in job.result.get(section) or {}:
            match = pattern.match(key)
            if not match:
                continue
            v = value(job, key) if value is not None else job.value(key, section)
            if v is not None:
                layers = collected.setdefault(sweep.label(sweep.config_of(job)), {})
                layers.setdefault(int(match.group(1)), []).append(v)
    order = [sweep.label(c) for c in sweep.configs()]
    return {
        label: dict(sorted(collected[label].items()))
        for label in sorted(collected, key=lambda x: order.index(x) if x in order else len(order))
    }


def _mean_and_band(
    ax: Any,
    xs: Sequence[float],
    runs: Sequence[Sequence[float]],
    label: str,
    style: dict[str, Any],
    log: bool,
    bounds: tuple[float, float] | None = None,
) -> None:
    """A line through the means of ``runs`` (the seeds' values at each x) and a shaded 95 %
    t-interval where at least two seeds have a value, clipped to ``bounds``. ``log``: both on
    log10 of the positive values (geometric mean, a multiplicative interval), as a log axis
    reads them."""
    if log:
        runs = [[math.log10(v) for v in vs if v > 0] for vs in runs]
    points = [
        (x, statistics.fmean(vs), t_interval(vs)) for x, vs in zip(xs, runs, strict=True) if vs
    ]
    back = (lambda v: 10.0**v) if log else (lambda v: v)
    ax.plot([x for x, _, _ in points], [back(m) for _, m, _ in points], label=label, **style)
    band = [
        (x, *clip_interval((back(ci[0]), back(ci[1])), bounds)[0])
        for x, _, ci in points
        if ci is not None
    ]
    if band:
        xs_band, low, high = zip(*band, strict=True)
        ax.fill_between(xs_band, low, high, color=style["color"], alpha=0.15)


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
    value: Callable[[Job, str], float | None] | None = None,
) -> str | None:
    """One line per configuration over the layer index (the mean over seeds, with a 95 %
    t-interval band); a note instead if no job has the keys.

    ``ylim`` fixes the y range (a fraction: 0 to 1) so that small differences look small;
    ``value`` reads a job's value of a key (default: ``section`` of result.json).
    """
    profiles = _layer_profiles(sweep, pattern, section, statuses, value)
    keys = pattern.pattern.strip("^$").replace(r"(\d+)", "XX")
    if not profiles:
        return f"{title}: skipped, no job has {keys} in `{section}`"
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for (label, layers), style in zip(profiles.items(), line_styles(len(profiles)), strict=True):
        n = max(len(vs) for vs in layers.values())
        label = f"{label} (n={n})"
        bounds = ylim or metric_bounds(keys)
        _mean_and_band(ax, list(layers), list(layers.values()), label, style, log, bounds)
    if log:
        ax.set_yscale("log")
    if ylim is not None:
        margin = 0.02 * (ylim[1] - ylim[0])
        ax.set_ylim(ylim[0] - margin, ylim[1] + margin)
    ax.set_xlabel("layer (1 = input side)")
    ax.set_ylabel(ylabel)
    statistic = "geometric mean and 95 % t-interval of log10" if log else "mean and 95 % t-interval"
    ax.set_title(f"{title}, {over_seeds(sweep, statistic)}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)
    return None


def read_curves(job_dir: Path, tags: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """Scalar curves (step, value) of ``tags`` from the job's TensorBoard events."""
    return {t: points for t, points in read_scalars(job_dir).items() if t in tags}


def val_curves(sweep: Sweep, path: Path) -> str | None:
    """Validation curves over the optimizer step: per configuration the mean over its seeds,
    with a shaded 95 % t-interval where at least two seeds reached the step."""
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
            runs = [dict(p) for p in (curves.get(j.name, {}).get(tag) for j in jobs) if p]
            if not runs:
                continue
            steps = sorted({step for run in runs for step in run})
            values = [[run[s] for run in runs if s in run] for s in steps]
            style = {**styles[label], "lw": 1.2, "markersize": 3}
            label = f"{label} (n={len(runs)})"
            _mean_and_band(ax, steps, values, label, style, False, metric_bounds(tag))
        title = f"{tag}: {over_seeds(sweep, 'mean and 95 % t-interval')}"
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


ACT_STD_LAYER = re.compile(r"^activations/std/layer_(\d+)$")
THEORY_GRAD_LAYER = re.compile(r"^grad_norm/ratio_to_last/layer_(\d+)$")


def _grad_ratio_to_last(job: Job) -> dict[str, float]:
    """The job's step-0 ``grad_norm/layer_XX`` over its last layer's, keyed as the theory's."""
    norms = {
        int(m.group(1)): v
        for k in job.result.get("init") or {}
        if (m := GRAD_NORM_LAYER.match(k)) and (v := job.value(k, "init")) is not None
    }
    if not norms or not norms[max(norms)]:
        return {}
    last = norms[max(norms)]
    return {f"grad_norm/ratio_to_last/layer_{k:02d}": v / last for k, v in norms.items()}


def theory_vs_measured(sweep: Sweep, path: Path) -> str | None:
    """Per configuration, the measured step-0 activation std and gradient norm (relative to the
    last layer) per layer, solid, beside the mean-field prediction, dashed; a note instead if
    no job has a prediction (``theory`` in result.json)."""
    title = "mean-field theory (dashed) vs step 0 (solid)"
    measured_grads = dataclasses.replace(
        sweep,
        jobs=[
            dataclasses.replace(job, result={**job.result, "init": _grad_ratio_to_last(job)})
            for job in sweep.jobs
        ],
    )
    panels = [
        (
            "activation std",
            _layer_profiles(sweep, ACT_STD_LAYER, "init", None),
            _layer_profiles(sweep, ACT_STD_LAYER, "theory", None),
            False,
        ),
        (
            "‖∂L/∂W_l‖ / ‖∂L/∂W_last‖",
            _layer_profiles(measured_grads, THEORY_GRAD_LAYER, "init", None),
            _layer_profiles(sweep, THEORY_GRAD_LAYER, "theory", None),
            True,
        ),
    ]
    if not any(predicted for _, _, predicted, _ in panels):
        return f"{title}: skipped, no job has a prediction (`theory` in result.json)"
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    labels = list(dict.fromkeys(lab for _, m, p, _ in panels for lab in [*m, *p]))
    # Solid for measured and dashed for theory, so configurations differ by colour, then marker.
    palette = colormaps["tab10"].colors
    colours = {lab: palette[i % len(palette)] for i, lab in enumerate(labels)}
    markers = {lab: MARKERS[i // len(palette) % len(MARKERS)] for i, lab in enumerate(labels)}
    for ax, (ylabel, measured, predicted, log) in zip(fig.subplots(1, 2), panels, strict=True):
        for label in labels:
            for profiles, style, suffix in ((measured, "-", ""), (predicted, "--", " (theory)")):
                if label not in profiles:
                    continue
                layers = profiles[label]  # layer -> the seeds' values
                n = max(len(vs) for vs in layers.values())
                means = {k: statistics.fmean(vs) for k, vs in layers.items()}
                points = [(k, v) for k, v in means.items() if v > 0 or not log]
                ax.plot(
                    [k for k, _ in points],
                    [v for _, v in points],
                    linestyle=style,
                    marker=None if suffix else markers[label],
                    color=colours[label],
                    label=f"{label}{suffix}" + ("" if suffix else f" (n={n})"),
                )
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("layer (1 = input side)")
        ax.set_ylabel(ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"{title}, {over_seeds(sweep, 'mean')}")
    _save(fig, path)
    return None


# The trainable depth of Schoenholz et al. (2017): networks train up to ~6 xi_c layers deep.
TRAINABLE_DEPTH_XI = 6


def shows_phases(sweep: Sweep) -> bool:
    """Whether the sweep is one for ``phase_diagram``: depth x one other axis, with xi_c."""
    return (
        "depth" in sweep.config_axes
        and len(sweep.config_axes) == 2
        and any("xi_c" in (job.result.get("theory") or {}) for job in sweep.jobs)
    )


def phase_diagram(sweep: Sweep, path: Path, metric: str = "train/acc") -> str | None:
    """``metric`` over a sweep of depth x one numeric axis (e.g. ``initializer.sigma_w2``),
    with the predicted trainable depth ``6 xi_c`` (result.json's ``theory``) over it; a note
    instead if the sweep is not of that shape or has no prediction."""
    title = f"phase diagram: {metric} with the trainable depth {TRAINABLE_DEPTH_XI} ξ_c"
    others = [a for a in sweep.config_axes if a != "depth"]
    if "depth" not in sweep.config_axes or len(others) != 1:
        return f"{title}: skipped, needs a sweep of depth and one other axis"
    axis = others[0]
    try:
        xs = sorted(float(v) for v in sweep.axes[axis])
        depths = sorted(int(v) for v in sweep.axes["depth"])
    except ValueError:
        return f"{title}: skipped, {axis} or depth has non-numeric values"
    xi: dict[float, float] = {}
    for job in sweep.jobs:
        value = (job.result.get("theory") or {}).get("xi_c")
        if isinstance(value, str) and value == "inf":
            value = math.inf
        if isinstance(value, int | float) and axis in job.values:
            xi[float(job.values[axis])] = float(value)
    if not xi:
        return f"{title}: skipped, no job has theory xi_c"
    seeds: list[list[list[float]]] = [[[] for _ in xs] for _ in depths]
    for job in sweep.jobs:
        v = job.value(metric)
        if job.status == "completed" and v is not None and axis in job.values:
            row, col = depths.index(int(job.values["depth"])), xs.index(float(job.values[axis]))
            seeds[row][col].append(v)
    grid = [[statistics.fmean(vs) if vs else math.nan for vs in row] for row in seeds]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    low, _ = _accuracy_floor(sweep, 0.0) if metric.endswith("acc") else (0.0, "")
    image = ax.imshow(
        grid,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        vmin=low,
        vmax=1.0,
        interpolation="none",
    )
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    # The curve in the heatmap's index coordinates: depth interpolated on the row axis.
    top = len(depths) - 0.5
    curve = []
    for i, x in enumerate(xs):
        d = TRAINABLE_DEPTH_XI * xi.get(x, math.nan)
        if math.isnan(d):
            continue
        row = top if d >= depths[-1] else float(np.interp(d, depths, range(len(depths))))
        curve.append((i, max(row, -0.5)))
    ax.plot(*zip(*curve, strict=True), "w--o", label=f"{TRAINABLE_DEPTH_XI} ξ_c (theory)")
    ax.set_xlabel(axis)
    ax.set_ylabel("depth")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{title}, {over_seeds(sweep, 'mean')}", fontsize=9)
    _save(fig, path)
    return None
