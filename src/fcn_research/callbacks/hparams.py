"""The HParams dashboard entry of a run, with its real final metrics (no hp_metric placeholder)
and the hyperparameters its sweep varies shown first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from fcn_research.callbacks.probe import member_writers
from fcn_research.sweeps import MULTIRUN_FILE, SEED_KEY, TUNED_KEY, swept_axes
from fcn_research.tensorboard_adapter import write_hparams

# Metrics shown per run in the HParams table; their values are the runs' last scalars.
DEFAULT_METRICS = (
    "val/acc",
    "val/mse",
    "val/loss",
    "neurons/dead_fraction",
    "grad_norm/ratio_first_last",
)


def _scalar(value: Any) -> bool | int | float | str:
    return value if isinstance(value, bool | int | float | str) else str(value)


def overridden_hparams(overrides: list[str], names: list[str]) -> list[str]:
    """The hparams that a job's command-line overrides set.

    ``depth=5`` sets ``depth``, ``data.noise=0.1`` sets ``data.noise``; a key that is no hparam
    name sets the hparam of its last part (``optimizer.lr`` sets ``lr``), if there is one.
    """
    found = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        name = key if key in names else key.rsplit(".", 1)[-1]
        if name in names:
            found.append(name)
    return found


def sweep_varied(job_dir: str | Path) -> list[str] | None:
    """The keys the job's sweep gives two or more values (or a continuous range), from the
    ``multirun.yaml`` Hydra writes at the sweep's start in the nearest dir above the job's;
    None for a job outside a sweep. A job sees only its own values, so the sweep's list says."""
    multirun = next(
        (
            d / MULTIRUN_FILE
            for d in Path(job_dir).resolve().parents
            if (d / MULTIRUN_FILE).is_file()
        ),
        None,
    )
    if multirun is None:
        return None
    axes, _ = swept_axes(multirun)
    # An interval() sweep (Optuna, Nevergrad) lists no values: a range, so it varies.
    varied = [key for key, values in axes.items() if len(set(values)) != 1]
    sweeper = OmegaConf.select(OmegaConf.load(multirun), "hydra.sweeper", default=None) or {}
    if "lr_min" in sweeper:  # hparams_search=lr: the search varies lr, and seed over its seeds
        varied.append(TUNED_KEY)
        if len(set(sweeper.get("seeds") or [])) > 1:
            varied.append(SEED_KEY)
    return varied


class HParamsSummary(Callback):
    """Writes the run's flat hparams and the names of its metrics to the HParams plugin.

    The hparams are the LightningModule's ``run_hparams`` (set by ``train()``, one dict per
    member of the stack: activation, depth, width, initializer, optimizer, lr, seed, data,
    ...), each written into its member's run with the overrides of its job
    (``run_overrides``). TensorBoard takes each
    metric's value from the run's scalar of the same tag, so the table shows final values.
    In a sweep, the hparams it gives two or more values are marked as differing (a key the
    sweep sets to one value is not); outside a sweep, those the run's overrides set. The
    dashboard lists the differing ones first and ticks the first five.

    Args:
        metrics: the metric tags to show; tags a run never logs are left out for it.
    """

    def __init__(self, metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS) -> None:
        self.metrics = list(metrics)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return  # a resumed job: its run holds what its first process wrote
        writers = member_writers(trainer)
        task = getattr(pl_module, "task", None)
        # Regression has no accuracy and classification no MSE: declare only what is logged.
        skip = "val/acc" if task == "regression" else "val/mse"
        metrics = {m: 0.0 for m in self.metrics if m != skip}
        members = getattr(pl_module, "run_hparams", None) or [dict(pl_module.hparams)]
        member_overrides = getattr(pl_module, "run_overrides", None) or [_hydra_overrides()]
        for writer, run_hparams, overrides in zip(writers, members, member_overrides, strict=False):
            if writer is None:  # a TensorBoard dashboard: other loggers have none
                continue
            swept = sweep_varied(writer.log_dir)
            keys = list(overrides) if swept is None else [f"{k}=" for k in swept]
            varied = overridden_hparams(keys, list(run_hparams))
            write_hparams(writer, {k: _scalar(v) for k, v in run_hparams.items()}, metrics, varied)


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
