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
  without ``result.json`` is ``missing`` (interrupted, or not yet written).
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
from fcn_research.report.loading import REPORT_DIR, NotASweepError, load_sweep
from fcn_research.report.tables import (
    Report,
    fmt,
    markdown,
    pivots,
    print_report,
    report_metrics,
    summary_rows,
    write_text,
)

__all__ = ["NotASweepError", "Report", "fmt", "load_sweep", "main", "print_report", "write_report"]


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


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
    write_text(out / "summary.csv", buffer.getvalue())
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
        ("theory_init.png", lambda p: theory_vs_measured(sweep, p)),
        ("val_curves.png", lambda p: val_curves(sweep, p)),
    ]
    if shows_phases(sweep):
        figures.append(("phase_diagram.png", lambda p: phase_diagram(sweep, p)))
    for name, draw in figures:
        note = draw(out / name)
        if note:
            report.notes.append(note)
        else:
            report.files.append(out / name)
    write_text(out / "summary.md", markdown(report))
    report.files.insert(1, out / "summary.md")
    return report


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
