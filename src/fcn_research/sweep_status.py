"""A Hydra callback that ends a sweep with a summary of its jobs' statuses and exit status.

Jobs never stop a sweep: one that raises is recorded as ``failed`` in its ``result.json``
and the launcher goes on. Once every job has returned, this callback counts the statuses of
all ``result.json`` files under the sweep directory and exits with status 1 if any job
``failed`` or is still ``running`` (killed, or its worker died). ``diverged`` is a result,
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

BAD_STATUSES = ("failed", "running")


def sweep_statuses(sweep_dir: str | Path) -> dict[str, list[str]]:
    """Job dirs under ``sweep_dir`` grouped by the status in their ``result.json``."""
    root = Path(sweep_dir)
    groups: dict[str, list[str]] = {}
    for path in sorted(root.rglob(RESULT_FILE)):
        result = read_result(path.parent) or {}
        groups.setdefault(str(result.get("status", "unreadable")), []).append(
            str(path.parent.relative_to(root))
        )
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
        if bad and self.exit_on_failure:
            sys.exit(1)
