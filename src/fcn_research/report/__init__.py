"""Sweep directory -> ``<sweep>/report/``: a CSV of every job, a markdown pivot, PNG figures.

``loading`` reads the sweep, ``tables`` makes the CSV and the pivots (markdown, terminal),
``figures`` the PNGs; this module writes them all (``fcn-report``, ``scripts/report.py``).

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
  without ``result.json`` is ``missing`` (interrupted, or not yet written), one whose
  ``result.json`` cannot be parsed (truncated by a full disk) is ``unreadable``.
- Each cell also has a 95 % Student's t confidence interval and its range (``report.stats``);
  ``--summary`` picks the final value, the best epoch's or the mean of the last k epochs
  (``report.epochs``); ``--baseline`` tests every cell against a baseline
  (``report.baseline``; ``--match-ignore lr`` matches cells across their own tuned lr, and
  every configuration left uncompared is named with the reason); ``--metric`` adds any tag
  of result.json, and a ``layer_XX`` family becomes a per-layer table and profile.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fcn_research.report import baseline as baseline_tests
from fcn_research.report.best_lr import at_best_lr
from fcn_research.report.epochs import SUMMARIES, Summary
from fcn_research.report.figures import (
    DEAD_LAYER,
    GRAD_NORM_LAYER,
    heatmap,
    layer_profile,
    phase_diagram,
    shows_phases,
    theory_vs_measured,
    val_curves,
)
from fcn_research.report.loading import (
    REPORT_DIR,
    NotASweepError,
    ReportOptionError,
    Sweep,
    load_sweep,
)
from fcn_research.report.tables import (
    LAYER_FAMILY,
    THEORY,
    Report,
    cell_rows,
    family_pattern,
    fmt,
    layer_pivot,
    markdown,
    pivots,
    print_report,
    report_metrics,
    summary_rows,
)
from fcn_research.results import write_atomic

__all__ = [
    "NotASweepError",
    "Report",
    "ReportOptionError",
    "Summary",
    "fmt",
    "load_sweep",
    "main",
    "print_report",
    "write_report",
]


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def _write_csv(path: Path, rows: list[dict[str, Any]], empty: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else empty)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def _check_metrics(sweep: Sweep, metrics: Sequence[str]) -> None:
    """Every ``--metric`` must be a tag (or a ``layer_XX`` family) of some job's result.json."""
    present = {k for job in sweep.jobs for k in job.result.get("metrics") or {}}
    for metric in metrics:
        pattern = family_pattern(metric)
        if any(pattern.match(k) for k in present) if pattern else metric in present:
            continue
        tags = sorted({re.sub(r"layer_\d+", LAYER_FAMILY, k) for k in present})
        raise ReportOptionError(
            f"--metric {metric}: no job's result.json has it in `metrics`; tags present: "
            f"{', '.join(tags) or 'none (no job has finished)'}"
        )


def _baseline_options(
    sweep: Sweep, baseline: str | None, match_ignore: str | None
) -> tuple[tuple[str, str] | None, list[str]]:
    """``--baseline`` as (axis, value) and ``--match-ignore`` as the axes it names."""
    compared = baseline_tests.parse_baseline(sweep, baseline) if baseline else None
    if match_ignore is not None and compared is None:
        raise ReportOptionError(f"--match-ignore {match_ignore}: applies with --baseline only")
    if compared is None or match_ignore is None:
        return compared, []
    return compared, baseline_tests.parse_match_ignore(sweep, match_ignore, compared[0])


def _figures(
    sweep: Sweep, scalars: Sequence[str], families: Sequence[str], summary: Summary
) -> list[tuple[str, Callable[[Path], str | None]]]:
    """The report's figures: file name and a function that draws it (or says why not)."""
    figures: list[tuple[str, Callable[[Path], str | None]]] = [
        (f"heatmap_{_slug(m)}.png", lambda p, m=m: heatmap(sweep, m, p, summary)) for m in scalars
    ]
    figures += [
        (
            f"profile_{_slug(f)}.png",
            lambda p, f=f: layer_profile(
                sweep,
                p,
                pattern=family_pattern(f),
                section="metrics",
                statuses={"completed"},
                log=False,
                ylabel=f,
                title=f"{f} per layer, {summary.describe()}",
                value=summary.value,
            ),
        )
        for f in families
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
        ("theory_init.png", lambda p: theory_vs_measured(sweep, p)),
        ("val_curves.png", lambda p: val_curves(sweep, p)),
    ]
    if shows_phases(sweep):
        figures.append(("phase_diagram.png", lambda p: phase_diagram(sweep, p)))
    return figures


def write_report(
    sweep_dir: str | os.PathLike[str],
    metrics: Sequence[str] = (),
    summary: Summary | None = None,
    baseline: str | None = None,
    match_ignore: str | None = None,
) -> Report:
    """Read the sweep and write ``summary.csv``, ``cells.csv``, ``summary.md`` and the PNGs
    (and ``comparisons.csv`` with a ``baseline``, e.g. ``activation=relu``) into ``report/``.
    ``match_ignore`` (``lr``): axes a cell and its baseline cell may differ in.

    ``metrics``: result.json tags to add to the default ones; ``beta/layer_XX`` stands for
    a per-layer family. ``summary``: which value of each run (default: the final one).
    """
    sweep, at_best = at_best_lr(load_sweep(sweep_dir))
    summary = summary or Summary()
    _check_metrics(sweep, metrics)
    compared, ignore = _baseline_options(sweep, baseline, match_ignore)
    families = [m for m in metrics if family_pattern(m)]
    scalars = report_metrics(sweep, [m for m in metrics if not family_pattern(m)])
    out = sweep.path / REPORT_DIR
    out.mkdir(exist_ok=True)
    tables = {m: pivots(sweep, m, summary) for m in scalars}
    tables.update({f: [layer_pivot(sweep, f, summary)] for f in families})
    report = Report(sweep, tables, [], [at_best] if at_best else [], summary)

    _write_csv(out / "summary.csv", summary_rows(sweep), ["job", "status"])
    report.files.append(out / "summary.csv")
    _write_csv(out / "cells.csv", cell_rows(sweep, scalars, summary), ["metric", "n"])
    report.files.append(out / "cells.csv")
    if compared:
        measured = [m for m in scalars if not m.startswith(THEORY)]  # not predictions
        rows, report.skipped = baseline_tests.comparisons(
            sweep, measured, *compared, summary, ignore
        )
        report.sections += baseline_tests.markdown_lines(
            rows, "=".join(compared), report.skipped, ignore
        )
        _write_csv(out / "comparisons.csv", baseline_tests.csv_rows(rows), ["metric"])
        report.files.append(out / "comparisons.csv")
    for name, draw in _figures(sweep, scalars, families, summary):
        note = draw(out / name)
        if note:
            report.notes.append(note)
        else:
            report.files.append(out / name)
    write_atomic(out / "summary.md", markdown(report))
    report.files.insert(1, out / "summary.md")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``fcn-report <sweep_dir> [--metric TAG] [--summary S --k K] [--baseline KEY=VALUE
    [--match-ignore KEY]]``:
    write the sweep's report and print its tables."""
    parser = argparse.ArgumentParser(prog="fcn-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun directory, e.g. outputs/sweeps/<time>")
    parser.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="TAG",
        help="a result.json tag to report besides the defaults (repeatable); a tag with "
        f"{LAYER_FAMILY} (e.g. beta/{LAYER_FAMILY}) gives a per-layer table and profile",
    )
    parser.add_argument(
        "--summary",
        choices=SUMMARIES,
        default="final",
        help="each run's value: the final one (default), the best epoch's (by validation "
        "metric) or the mean of the last --k epochs; best and last_k read TensorBoard events",
    )
    parser.add_argument("--k", type=int, default=None, help="epochs for --summary last_k (3)")
    parser.add_argument(
        "--baseline",
        metavar="KEY=VALUE",
        help="compare every cell with the cell that has KEY=VALUE and the same other axes "
        "(paired t-test by seed, else Welch), e.g. activation=relu",
    )
    parser.add_argument(
        "--match-ignore",
        metavar="KEY[,KEY]",
        help="with --baseline: match each cell with its baseline on every axis but these, "
        "e.g. lr where each cell ran at its own tuned learning rate",
    )
    args = parser.parse_args(argv)
    if args.k is not None and args.summary != "last_k":
        parser.error(f"--k {args.k} applies to --summary last_k, not --summary {args.summary}")
    try:
        summary = Summary(args.summary, 3 if args.k is None else args.k)
        report = write_report(
            args.sweep_dir, args.metric, summary, args.baseline, args.match_ignore
        )
    except (NotASweepError, ReportOptionError) as err:
        print(f"fcn-report: error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    return 0
