"""``python train.py``: the ``@hydra.main`` entry point, light enough to answer at once.

``--help`` and ``--cfg job`` only compose the config, so this module, its resolvers and the
Hydra callbacks in ``conf/train.yaml`` import neither torch nor Lightning (seconds to load); the
training code is imported inside ``main`` when a job runs.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# Importing run_dirs registers the resolvers that conf/train.yaml names its dirs with.
from fcn_research.run_dirs import CONF_DIR, claimed_dirs

# Exit status of a sweep stopped by Ctrl-C: 128 + SIGINT, as a shell reports a process it ended.
INTERRUPTED_EXIT = 130


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """One job of ``python train.py [overrides]``: one run, or each job of a sweep (``-m``)."""
    from fcn_research.job import run_job

    return run_job(cfg)


def interrupted_sweep_dir() -> Path | None:
    """The dir of the sweep this process runs, once it has one (its ``multirun.yaml``)."""
    from fcn_research import sweep_status

    config = sweep_status.started_sweep
    if config is None:
        return None
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False)["dir"]
    if "fcn_unique_dir" in str(raw) and not claimed_dirs:
        return None  # not resolved yet: resolving it now would claim a new dir
    path = Path(str(config.hydra.sweep.dir))  # the sweeper's value (the config caches it)
    return path if (path / "multirun.yaml").is_file() else None


def resume_command(argv: list[str], sweep_dir: Path) -> str:
    """The command line ``argv`` again, into ``sweep_dir``: it resumes that sweep."""
    args = [arg for arg in argv[1:] if not arg.startswith("hydra.sweep.dir=")]
    shown = os.path.relpath(sweep_dir)
    if shown.startswith(".."):
        shown = str(sweep_dir.resolve())
    return shlex.join(["python", argv[0], *args, f"hydra.sweep.dir={shown}"])


def main() -> None:
    """``python train.py [overrides]``. A sweep stopped by Ctrl-C prints its jobs' statuses
    and the command that resumes it, and exits with status 130 (128 + SIGINT)."""
    try:
        hydra_main()
    except (KeyboardInterrupt, SystemExit) as err:
        # Lightning answers Ctrl-C in fit with a graceful shutdown, then sys.exit(1).
        if isinstance(err, SystemExit) and not isinstance(err.__context__, KeyboardInterrupt):
            raise
        sweep_dir = interrupted_sweep_dir()
        if sweep_dir is None:  # a single run, or a sweep stopped before it had a dir
            raise
        from fcn_research.sweep_status import interrupted_report

        print(interrupted_report(sweep_dir, resume_command(sys.argv, sweep_dir)), file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
