"""Where runs go: the config dir, and the run and job dir names of ``conf/train.yaml``.

Importing this module registers the resolvers those names use (``fcn_unique_dir``,
``fcn_job_dirname``), so any code that composes the configs under ``CONF_DIR`` can resolve
them. It imports neither torch nor Lightning: ``python train.py --help`` answers at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF_DIR = Path(os.environ.get("FCN_RESEARCH_CONF", Path(__file__).resolve().parents[2] / "conf"))
# The dirs this process claimed through fcn_unique_dir, in order.
claimed_dirs: list[str] = []


def unique_dir(path: str) -> str:
    """Claim ``path`` (or ``path_1``, ``path_2`` ...) by creating it: same-second runs never share.

    ``os.mkdir`` fails if the directory exists, so two processes cannot claim the same one.
    Hydra caches the resolved value per config, so one sweep resolves this once.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 0
    while True:
        try:
            os.mkdir(candidate)
            claimed_dirs.append(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{path}_{n}"


def job_dirname(override_dirname: str, job_num: Any) -> str:
    """A job's directory name: its overrides (``activation=relu,depth=3``), or ``job_<n>``."""
    name = override_dirname or f"job_{job_num}"
    return re.sub(r"[/\\]", "_", name)


OmegaConf.register_new_resolver("fcn_unique_dir", unique_dir, use_cache=True, replace=True)
OmegaConf.register_new_resolver("fcn_job_dirname", job_dirname, replace=True)
