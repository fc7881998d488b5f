"""The HParams dashboard entry of a run, with its real final metrics (no hp_metric placeholder)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.utils.tensorboard.summary import hparams

from fcn_research.callbacks.probe import tensorboard

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


class HParamsSummary(Callback):
    """Writes the run's flat hparams and the names of its metrics to the HParams plugin.

    The hparams are the LightningModule's ``run_hparams`` (set by ``train()``: activation,
    depth, width, initializer, optimizer, lr, seed, data, ...). TensorBoard takes each
    metric's value from the run's scalar of the same tag, so the table shows final values.

    Args:
        metrics: the metric tags to show; tags a run never logs are left out for it.
    """

    def __init__(self, metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS) -> None:
        self.metrics = list(metrics)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.global_rank != 0:
            return
        run_hparams = getattr(pl_module, "run_hparams", None) or dict(pl_module.hparams)
        task = getattr(pl_module, "task", None)
        # Regression has no accuracy and classification no MSE: declare only what is logged.
        skip = "val/acc" if task == "regression" else "val/mse"
        metrics = {m: 0.0 for m in self.metrics if m != skip}
        exp, ssi, sei = hparams({k: _scalar(v) for k, v in run_hparams.items()}, metrics)
        file_writer = writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
