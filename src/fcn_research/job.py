"""The Hydra jobs around a training: ``run_job`` (one job of ``python train.py``) and
``run_stack`` (one stack of a stacked sweep); the one-line messages they print.

A refused config is one line, not a traceback; a failed job of a sweep is recorded and the
sweep goes on. Everything else (locks, result.json, the fit) is ``fcn_research.train``'s.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fcn_research import train as training  # an attribute: tests replace train_stack
from fcn_research.config_checks import check_config, exit_refused, refusal
from fcn_research.job_lock import LOCK_FILE, JobDirBusy
from fcn_research.results import RESULT_FILE, read_result
from fcn_research.stacking import read_manifest

log = logging.getLogger(__name__)

# What a job's last terminal line shows; result.json and train.log hold every metric.
KEY_METRICS = ("val/acc", "val/mse", "neurons/dead_fraction", "grad_norm/ratio_first_last")
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def summary(result: dict[str, Any]) -> str:
    """A job's outcome in one line: status, key final metrics, epochs and wall time."""
    metrics = result.get("metrics", {})
    shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in KEY_METRICS if metrics.get(k) is not None)
    return (
        f"{result.get('status')}: {shown or 'no metrics'}  "
        f"(epochs {result.get('epochs', 0)}, {result.get('wall_s', 0):.1f} s)"
    )


def quiet_lightning(verbose: Any) -> None:
    """Lightning's info lines (devices found, a product tip, why fit stopped) only at
    ``hydra.verbose=true`` or ``hydra.verbose=lightning``; its warnings always.

    Lightning sets its loggers to INFO when imported, after Hydra has applied
    ``hydra.verbose``, so the level is set here, once Lightning is loaded.
    """
    if logging.getLogger().handlers:
        # Lightning's import gives the `lightning` logger a console handler of its own; Hydra's
        # job logging on the root already prints its records (and writes them to train.log).
        own = logging.getLogger("lightning")
        own.handlers = [h for h in own.handlers if type(h) is not logging.StreamHandler]
    names = [verbose] if isinstance(verbose, str) else list(verbose or [])
    for logger in LIGHTNING_LOGGERS:
        named = verbose is True or any(logger == n or logger.startswith(f"{n}.") for n in names)
        logging.getLogger(logger).setLevel(logging.DEBUG if named else logging.WARNING)


def _remove_refused_run(run_dir: Path) -> None:
    """Remove a single run's dir that holds only what Hydra and a refused start wrote there."""
    left = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if left <= {".hydra", "train.log", RESULT_FILE, LOCK_FILE}:
        shutil.rmtree(run_dir, ignore_errors=True)


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory where it lies below it: shorter to read."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def run_job(cfg: DictConfig) -> float | None:
    """One job of ``python train.py`` (``fcn_research.cli.main``): train, return the metric.

    A refused config (or a job dir in use) is one line, not a traceback (``HYDRA_FULL_ERROR=1``
    shows it); a single run's refused config leaves no run dir behind, and its dir is shown
    only once the config is accepted.
    """
    hydra_cfg = HydraConfig.get()
    quiet_lightning(hydra_cfg.verbose)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    fresh = not (Path(cfg.output_dir) / RESULT_FILE).exists()
    out = _shown_path(cfg.output_dir)
    if multirun:  # Hydra's launcher has just logged the job's overrides
        log.info("job dir %s", out)
    try:
        if not multirun:
            check_config(cfg)  # train checks again; a dir shown is one that stays
            log.info("%s -> run dir %s", " ".join(hydra_cfg.overrides.task) or "defaults", out)
        result = training.train(cfg)
    except Exception as err:
        message = str(err) if isinstance(err, JobDirBusy) else refusal(err)
        if multirun:
            # One failed job must not end the sweep; result.json says `failed` and why.
            if message is None:
                log.exception("job failed; the sweep goes on")
            else:
                log.error("job failed: %s; the sweep goes on", message)
            return None
        if message is None:
            raise
        if fresh and not isinstance(err, JobDirBusy):  # an earlier run's or the holder's: kept
            _remove_refused_run(Path(cfg.output_dir))
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        exit_refused(message)
    log.info("%s", summary(result))
    metrics = result.get("metrics", {})
    value = metrics.get("val/acc", metrics.get("val/mse"))
    return float(value) if value is not None else None


def run_stack(cfg: DictConfig) -> list[dict[str, Any]]:
    """A stack job's task function: train the members of ``cfg.stack_manifest`` together and
    return their results in order (a failure is in the results, not raised)."""
    if HydraConfig.initialized():
        quiet_lightning(HydraConfig.get().verbose)
    stack, members = read_manifest(cfg.stack_manifest)
    try:
        results = training.train_stack(members, stack)
    except Exception:  # as run_job: the sweep goes on, and its status shows these members
        log.exception("%s failed; the sweep goes on", stack["id"])
        results = [read_result(m.output_dir) or {"status": "failed"} for m in members]
    for member, result in zip(members, results, strict=True):
        log.info("%s %s: %s", stack["id"], member.hydra.sweep.subdir, summary(result))
    return list(results)
