"""The report's tables: one CSV row per job, pivots of mean ± std over seeds, markdown, rich."""

from __future__ import annotations

import itertools
import math
import os
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from fcn_research.report.loading import DASH, REPLICATE_AXIS, Sweep

VAL_METRICS = ("val/acc", "val/mse", "val/loss")
TEST_METRICS = ("test/acc", "test/mse")
INSTRUMENT_METRICS = ("neurons/dead_fraction", "grad_norm/ratio_first_last")
NON_FINITE = "NaN/inf"  # a completed job whose metric is NaN or inf (null in result.json)


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
    """The metric's pivot tables, one per facet (see ``fcn_research.report``)."""
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
    """The validation metric (acc, else mse, else loss), the test metric where the jobs have
    one, and the instrument summaries."""
    present = {k for job in sweep.jobs for k in job.result.get("metrics") or {}}
    val = next((m for m in VAL_METRICS if m in present), VAL_METRICS[0])
    test = [m for m in TEST_METRICS if m in present][:1]
    return [val, *test, *INSTRUMENT_METRICS]


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temp file and a rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """``write_atomic`` for text."""
    write_atomic(path, lambda f: f.write(text.encode()))


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
