"""A learning-rate search's sweep (``hparams_search=lr``) seen at each cell's best lr.

``best_lr.csv``, which the search writes into its sweep dir, names for every cell the job dirs
of its best lr (or, where no trial completed, every job it tried). The report then keeps just
those jobs and drops the ``lr`` axis, so each cell is one configuration averaged over seeds.
"""

from __future__ import annotations

import csv
from dataclasses import replace

from fcn_research.lr_search import BEST_LR_CSV, JOBS, JOBS_SEP, TUNED_KEY
from fcn_research.report.loading import Sweep


def at_best_lr(sweep: Sweep) -> tuple[Sweep, str | None]:
    """The sweep restricted to the jobs ``best_lr.csv`` names, and a note saying so; the sweep
    unchanged (and None) when it has no ``best_lr.csv``."""
    path = sweep.path / BEST_LR_CSV
    if not path.is_file():
        return sweep, None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = {name for row in rows for name in (row.get(JOBS) or "").split(JOBS_SEP) if name}
    jobs = [job for job in sweep.jobs if job.name in kept]
    axes = {k: v for k, v in sweep.axes.items() if k != TUNED_KEY}
    note = (
        f"each cell at its best learning rate ({BEST_LR_CSV}: {len(rows)} cells, "
        f"{len(jobs)} of {len(sweep.jobs)} jobs shown)"
    )
    return replace(sweep, axes=axes, jobs=jobs), note
