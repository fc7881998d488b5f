"""The HParams dashboard entry of a run, with its real final metrics (no hp_metric placeholder)
and the hyperparameters its sweep varies shown first."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

from fcn_research.callbacks.probe import member_writers

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


def mark_varied(experiment: Summary, varied: list[str]) -> None:
    """Mark the hparams ``varied`` as differing across runs, in the experiment summary.

    The HParams dashboard ticks the first five hparams by default, differing ones first
    (TensorBoard 2.21 sorts by ``differs``, then by name). TensorBoard sets ``differs`` only
    when it builds the experiment itself; torch's ``hparams()`` leaves it unset, so the five
    would be the alphabetical first (activation, batch_size, data, ...).
    """
    metadata = experiment.value[0].metadata
    data = HParamsPluginData.FromString(metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in varied
    metadata.plugin_data.content = data.SerializeToString()


class HParamsSummary(Callback):
    """Writes the run's flat hparams and the names of its metrics to the HParams plugin.

    The hparams are the LightningModule's ``run_hparams`` (set by ``train()``, one dict per
    member of the stack: activation, depth, width, initializer, optimizer, lr, seed, data,
    ...), each written into its member's run with the overrides of its job
    (``run_overrides``). TensorBoard takes each
    metric's value from the run's scalar of the same tag, so the table shows final values.
    The hparams the job's overrides set (in a sweep: what the sweep varies) are marked as
    differing, so the dashboard shows them by default.

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
            exp, ssi, sei = hparams({k: _scalar(v) for k, v in run_hparams.items()}, metrics)
            mark_varied(exp, overridden_hparams(list(overrides), list(run_hparams)))
            file_writer = writer._get_file_writer()
            for summary in (exp, ssi, sei):
                file_writer.add_summary(summary)


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
