"""A Hydra callback that ends a sweep with a summary of its jobs' statuses and exit status.

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

log = logging.getLogger(__name__)

MISSING = "missing"  # a job dir that Hydra created but that has no result.json
BAD_STATUSES = ("failed", "running", MISSING)


def sweep_statuses(sweep_dir: str | Path) -> dict[str, list[str]]:
    """Job dirs under ``sweep_dir`` grouped by the status in their ``result.json``."""
    root = Path(sweep_dir)
    jobs = {p.parent for p in root.rglob(RESULT_FILE)}
    jobs |= {p.parent for p in root.rglob(".hydra") if p.is_dir() and p.parent != root}
    groups: dict[str, list[str]] = {}
    for job in sorted(jobs):
        if (job / RESULT_FILE).exists():
            status = str((read_result(job) or {}).get("status", "unreadable"))
        else:
            status = MISSING
        groups.setdefault(status, []).append(str(job.relative_to(root)))
    return groups


class SweepStatus(Callback):
    """After a multirun: log how many jobs completed, diverged, failed; exit 1 on failures."""

    def __init__(self, exit_on_failure: bool = True) -> None:
        self.exit_on_failure = exit_on_failure

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        groups = sweep_statuses(sweep_dir)
        counts = Counter({status: len(jobs) for status, jobs in groups.items()})
        log.info("sweep %s: %s", sweep_dir, dict(sorted(counts.items())) or "no results")
        bad = [(s, job) for s in BAD_STATUSES for job in groups.get(s, [])]
        bad += [("unreadable", job) for job in groups.get("unreadable", [])]
        for status, job in bad:
            log.error("job %s: %s (see its result.json and train.log)", job, status)
        if not groups:
            log.error("sweep %s: no job left a result.json", sweep_dir)
        if (bad or not groups) and self.exit_on_failure:
            sys.exit(1)
