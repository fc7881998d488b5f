"""A Hydra callback that ends a sweep with a table of its jobs' statuses and its exit status.

Jobs never stop a sweep: one that raises is recorded as ``failed`` in its ``result.json``
and the launcher goes on. Once every job has returned, this callback counts the statuses of
the sweep's job dirs (those holding a ``result.json`` or Hydra's ``.hydra/``) and exits with
status 1 if any job ``failed``, is still ``running`` (killed, or its worker died) or is
``missing`` its ``result.json``, or if no job left one at all. ``diverged`` is a result,
not an error: a sweep whose jobs all completed or diverged exits 0.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fcn_research.results import RESULT_FILE, read_result
from fcn_research.stacking import STACKS_DIR

log = logging.getLogger(__name__)

MISSING = "missing"  # a job dir that Hydra created but that has no result.json
BAD_STATUSES = ("failed", "running", MISSING)
VAL_METRICS = ("val/acc", "val/mse")  # the table's column: the task's validation metric
# The config of the sweep this process runs, from its start: what a Ctrl-C reports on
# (fcn_research.cli.main), since Hydra ends an interrupted sweep without on_multirun_end.
started_sweep: DictConfig | None = None


def sweep_statuses(sweep_dir: str | Path) -> dict[str, list[str]]:
    """Job dirs under ``sweep_dir`` grouped by the status in their ``result.json``."""
    root = Path(sweep_dir)
    jobs = {p.parent for p in root.rglob(RESULT_FILE)}
    jobs |= {p.parent for p in root.rglob(".hydra") if p.is_dir() and p.parent != root}
    # A stack's own dir (launcher=stacked) holds its manifest and log; its members are jobs.
    jobs = {job for job in jobs if STACKS_DIR not in job.relative_to(root).parts}
    groups: dict[str, list[str]] = {}
    for job in sorted(jobs):
        if (job / RESULT_FILE).exists():
            status = str((read_result(job) or {}).get("status", "unreadable"))
        else:
            status = MISSING
        groups.setdefault(status, []).append(str(job.relative_to(root)))
    return groups


def sweep_table(sweep_dir: str | Path, groups: dict[str, list[str]]) -> list[str]:
    """One line per job: its dir, its status and its final validation metric."""
    rows = sorted((job, status) for status, jobs in groups.items() for job in jobs)
    width = max((len(job) for job, _ in rows), default=0)
    lines = []
    for job, status in rows:
        metrics = (read_result(Path(sweep_dir) / job) or {}).get("metrics") or {}
        shown = next(
            (f"{key} {metrics[key]:.4g}" for key in VAL_METRICS if metrics.get(key) is not None),
            "",
        )
        lines.append(f"  {job:<{width}}  {status:<9}  {shown}".rstrip())
    return lines


def interrupted_report(sweep_dir: str | Path, command: str) -> str:
    """What a sweep stopped by Ctrl-C says: its jobs' statuses and the command that resumes it."""
    # A job dir without result.json had not started (a stacked launcher makes its dirs first).
    groups = {
        "not started" if status == MISSING else status: jobs
        for status, jobs in sweep_statuses(sweep_dir).items()
    }
    counts = dict(sorted((status, len(jobs)) for status, jobs in groups.items()))
    return "\n".join(
        [
            f"sweep {sweep_dir} interrupted: {counts or 'no results'}",
            *sweep_table(sweep_dir, groups),
            "resume it (finished jobs are skipped, the others go on from their last checkpoint):",
            f"  {command}",
        ]
    )


class SweepStatus(Callback):
    """After a multirun: a table of its jobs' statuses, the commands that open it in
    TensorBoard and the report; exit 1 on failures."""

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global started_sweep
        started_sweep = config

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        groups = sweep_statuses(sweep_dir)
        counts = Counter({status: len(jobs) for status, jobs in groups.items()})
        log.info(
            "sweep %s: %s\n%s",
            sweep_dir,
            dict(sorted(counts.items())) or "no results",
            "\n".join(sweep_table(sweep_dir, groups)),
        )
        bad = [(s, job) for s in BAD_STATUSES for job in groups.get(s, [])]
        bad += [("unreadable", job) for job in groups.get("unreadable", [])]
        for status, job in bad:
            log.error("job %s: %s (see its result.json and train.log)", job, status)
        if not groups:
            log.error("sweep %s: no job left a result.json", sweep_dir)
        if groups:
            log.info(
                "compare the runs: tensorboard --logdir %s\n"
                "table and figures: python scripts/report.py %s",
                sweep_dir,
                sweep_dir,
            )
        if (bad or not groups) and self.exit_on_failure:
            sys.exit(1)
