"""``python train.py``: the ``@hydra.main`` entry point, light enough to answer at once.

``--help`` and ``--cfg job`` only compose the config, so this module, its resolvers and the
Hydra callbacks in ``conf/train.yaml`` import neither torch nor Lightning (~5 s); the
training code is imported inside ``main`` when a job runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(os.environ.get("FCN_RESEARCH_CONF", Path(__file__).resolve().parents[2] / "conf"))


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


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """``python train.py [overrides]``: one run, or a sweep with ``-m``."""
    from fcn_research.train import run_job

    return run_job(cfg)
