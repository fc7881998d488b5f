"""The report's tables: one CSV row per job, pivots of mean ± std over seeds, markdown, rich."""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fcn_research.report.epochs import TEST_NOT_AT_BEST, TEST_PREFIX, Summary
from fcn_research.report.loading import DASH, REPLICATE_AXIS, Sweep
from fcn_research.report.stats import clip_interval, metric_bounds, t_interval

VAL_METRICS = ("val/acc", "val/mse", "val/loss")
TEST_METRICS = ("test/acc", "test/mse")
INSTRUMENT_METRICS = (
    "neurons/dead_fraction",
    "neurons/saturated_fraction",
    "neurons/low_gradient_fraction",
    "grad_norm/ratio_first_last",
)
# The prediction shown beside them where jobs have one (result.json's theory section).
THEORY = "theory:"
THEORY_METRICS = (f"{THEORY}chi1",)
NON_FINITE = "NaN/inf"  # a completed job whose metric is NaN or inf (null in result.json)
# --summary best/last_k: a completed job whose TensorBoard events lack the metric's epochs.
NO_EPOCHS = "no epoch values"
LAYER_FAMILY = "layer_XX"  # in a --metric tag: every layer_01, layer_02, ... of that family


def _metric_order(key: str) -> tuple[int, str]:
    rank = 0 if key.startswith("val/") else 1 if key.startswith("train/") else 2
    return (rank, key)


def summary_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job: job, status, overrides, hparams, final metrics, ``init:`` metrics,
    ``theory:`` predictions, time."""
    hparams = list(dict.fromkeys(k for j in sweep.jobs for k in j.result.get("hparams") or {}))
    sections = {
        s: sorted({k for j in sweep.jobs for k in j.result.get(s) or {}}, key=_metric_order)
        for s in ("metrics", "init")
    }
    theory_keys = list(
        dict.fromkeys(k for j in sweep.jobs for k in j.result.get("theory") or {} if k != "notes")
    )
    rows = []
    for job in sweep.jobs:
        res = job.result
        theory = {k: (res.get("theory") or {}).get(k) for k in theory_keys}
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
        row.update({f"{THEORY}{k}": v for k, v in theory.items()})
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
    seeds: list[str] = field(default_factory=list)  # the seed of each value
    bounds: tuple[float, float] | None = None  # the metric's range (``metric_bounds``)

    @property
    def mean(self) -> float | None:
        """Mean over the completed jobs, or None."""
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n-1), or None for fewer than two values."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def ci(self) -> tuple[float, float] | None:
        """95 % Student's t-interval of the mean (``report.stats``), clipped to the metric's
        bounds, or None for n < 2."""
        interval = t_interval(self.values)
        return clip_interval(interval, self.bounds)[0] if interval else None

    @property
    def ci_clipped(self) -> bool:
        """Whether the t-interval ran past the metric's bounds (and ``ci`` is clipped)."""
        interval = t_interval(self.values)
        return interval is not None and clip_interval(interval, self.bounds)[1]

    def text(self) -> str:
        """``0.812 ± 0.010 [0.787, 0.837] (n=3, range 0.801–0.821, 1 diverged)``: mean ± sample
        std, the 95 % CI, n, min–max; ``–`` when there is nothing to show."""
        notes = [f"{n} {status}" for status, n in sorted(self.others.items())]
        if not self.values:
            return ", ".join(notes) or DASH
        mean = fmt(self.mean)
        facts = [f"n={len(self.values)}"]
        if self.std is not None and self.ci is not None:
            low, high = self.ci
            mean += f" ± {fmt(self.std)} [{fmt(low)}, {fmt(high)}]"
            facts.append(f"range {fmt(min(self.values))}–{fmt(max(self.values))}")
            if self.ci_clipped and self.bounds:
                facts.append(f"CI clipped to [{self.bounds[0]:g}, {self.bounds[1]:g}]")
        return f"{mean} ({', '.join([*facts, *notes])})"


def cells(sweep: Sweep, metric: str, summary: Summary | None = None) -> dict[tuple[str, ...], Cell]:
    """Per configuration: completed jobs' ``metric`` (final unless ``summary`` says otherwise);
    other statuses and NaN/inf counted.

    ``theory:<key>`` is the mean-field prediction ``<key>`` of result.json's ``theory``.
    """
    summary = summary or Summary()
    theory = metric.startswith(THEORY)
    section, key = ("theory", metric.removeprefix(THEORY)) if theory else ("metrics", metric)
    bounds = None if theory else metric_bounds(metric)
    out = {config: Cell(bounds=bounds) for config in sweep.configs()}
    for job in sweep.jobs:
        cell = out.setdefault(sweep.config_of(job), Cell(bounds=bounds))
        value = job.value(key, section) if theory else summary.value(job, metric)
        if job.status != "completed":
            cell.others[job.status] += 1
        elif value is not None:
            cell.values.append(value)
            cell.seeds.append(job.values.get(REPLICATE_AXIS, DASH))
        elif not theory and summary.not_at_best(job, metric):
            cell.others[TEST_NOT_AT_BEST] += 1
        elif key in (job.result.get(section) or {}):
            finite = not theory and summary.kind != "final" and job.value(metric) is not None
            cell.others[NO_EPOCHS if finite else NON_FINITE] += 1
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


def pivots(sweep: Sweep, metric: str, summary: Summary | None = None) -> list[Pivot]:
    """The metric's pivot tables, one per facet (see ``fcn_research.report``)."""
    by_config = cells(sweep, metric, summary)
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


def report_metrics(sweep: Sweep, extra: Sequence[str] = ()) -> list[str]:
    """The validation metric (acc, else mse, else loss), the test metric where the jobs have
    one, ``extra``, the instrument summaries and, where jobs have a prediction,
    ``theory:chi1``."""
    present = {k for job in sweep.jobs for k in job.result.get("metrics") or {}}
    val = next((m for m in VAL_METRICS if m in present), VAL_METRICS[0])
    test = [m for m in TEST_METRICS if m in present][:1]
    predicted = {k for job in sweep.jobs for k in job.result.get("theory") or {}}
    theory = [m for m in THEORY_METRICS if m.removeprefix(THEORY) in predicted]
    return list(dict.fromkeys([val, *test, *extra, *INSTRUMENT_METRICS, *theory]))


def family_pattern(tag: str) -> re.Pattern[str] | None:
    """``beta/layer_XX`` -> a pattern matching ``beta/layer_01``, ... (group 1: the layer);
    None for a single tag."""
    if LAYER_FAMILY not in tag:
        return None
    return re.compile("^" + re.escape(tag).replace(LAYER_FAMILY, r"layer_(\d+)") + "$")


def layer_pivot(sweep: Sweep, family: str, summary: Summary | None = None) -> Pivot:
    """A per-layer family as one table: a row per configuration, a column per layer."""
    pattern = family_pattern(family)
    if pattern is None:
        raise ValueError(f"{family} is not a per-layer family (it has no {LAYER_FAMILY})")
    layers: dict[int, str] = {}
    for job in sweep.jobs:
        for key in job.result.get("metrics") or {}:
            if match := pattern.match(key):
                layers[int(match.group(1))] = key
    configs = sweep.configs()
    by_key = {key: cells(sweep, key, summary) for key in layers.values()}
    grid = [[by_key[layers[i]].get(c, Cell()) for i in sorted(layers)] for c in configs]
    columns = [f"layer {i:02d}" for i in sorted(layers)]
    rows = [sweep.label(c) for c in configs]
    return Pivot("", "configuration \\ layer", rows, columns, grid)


def cell_rows(
    sweep: Sweep, metrics: Sequence[str], summary: Summary | None = None
) -> list[dict[str, Any]]:
    """``cells.csv``: per metric and configuration, n, mean, 95 % CI, std, min, max."""
    summary = summary or Summary()
    rows = []
    for metric in metrics:
        for config, cell in cells(sweep, metric, summary).items():
            ci = cell.ci
            rows.append(
                {
                    "metric": metric,
                    "summary": summary.describe(),
                    **dict(zip(sweep.config_axes, config, strict=True)),
                    "n": len(cell.values),
                    "mean": cell.mean,
                    "ci95_low": ci[0] if ci else None,
                    "ci95_high": ci[1] if ci else None,
                    "ci95_clipped": cell.ci_clipped,
                    "std": cell.std,
                    "min": min(cell.values, default=None),
                    "max": max(cell.values, default=None),
                    "not_averaged": ", ".join(f"{n} {s}" for s, n in sorted(cell.others.items())),
                }
            )
    return rows


@dataclass
class Report:
    """What ``write_report`` produced: the tables (for printing), files and skip notes."""

    sweep: Sweep
    tables: dict[str, list[Pivot]]
    files: list[Path]
    notes: list[str]
    summary: Summary = field(default_factory=Summary)
    sections: list[str] = field(default_factory=list)  # markdown lines after the tables
    skipped: list[str] = field(default_factory=list)  # --baseline: configurations not compared


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


def _test_note(summary: Summary, metric: str) -> str | None:
    """Under ``--summary best``, what a test metric's cells hold (its table's footnote)."""
    if summary.kind != "best" or not metric.startswith(TEST_PREFIX):
        return None
    return (
        f"`{metric}` is measured once, after training: it is the best epoch's only for runs "
        "with `test_weights=best_val` (the test split evaluated on the best validation epoch's "
        f"weights); runs that tested their last epoch's weights count as {TEST_NOT_AT_BEST}."
    )


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
        f"Cells ({report.summary.describe()}): over `{REPLICATE_AXIS}` of the completed "
        "jobs, mean ± sample std (n-1) [95 % confidence interval of the mean, Student's t with "
        "n-1 degrees of freedom; for accuracies, fractions and sparsity clipped to [0, 1], which "
        "the cell then says] (n, range min–max); jobs diverged, failed, running, missing (no "
        "result.json), unreadable (a result.json that cannot be parsed) or not started, and "
        "completed jobs whose value is NaN or inf "
        f"({NON_FINITE}), are counted in brackets, not averaged. Every cell is a row of "
        "[cells.csv](cells.csv).",
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
        note = _test_note(report.summary, metric)
        if _empty(tables):
            where = "" if report.summary.kind == "final" else " per epoch in its TensorBoard events"
            lines += ["", f"{DASH} ({note or f'no completed job reports `{metric}`{where}'})"]
            continue
        for pivot in tables:
            lines += [
                "",
                *([f"### {pivot.title}", ""] if pivot.title else []),
                *_markdown_table(pivot),
            ]
        lines += ["", note] if note else []
    lines += report.sections
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


def print_report(report: Report, console: Console | None = None) -> None:
    """The pivots as rich tables, then the skip notes and where the files are."""
    console = console or Console()
    for metric, tables in report.tables.items():
        note = _test_note(report.summary, metric)
        if _empty(tables):
            console.print(f"{metric}: {DASH} ({note or 'no completed job reports it'})")
            continue
        for pivot in tables:
            table = Table(title=f"{metric}" + (f" · {pivot.title}" if pivot.title else ""))
            for header in [pivot.row_axis, *pivot.columns]:
                table.add_column(header)
            for r, row in zip(pivot.rows, pivot.cells, strict=True):
                table.add_row(r, *(c.text() for c in row))
            console.print(table)
        if note:
            console.print(note, soft_wrap=True)
    for line in report.skipped:
        console.print(f"--baseline: {line}", style="yellow", soft_wrap=True, markup=False)
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]", soft_wrap=True)
    console.print(f"report written to {report.files[0].parent}/")
    for path in report.files:
        console.print(f"  {path.name}")
