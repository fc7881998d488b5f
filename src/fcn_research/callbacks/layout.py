"""TensorBoard's Custom Scalars layout: every layer of a metric in one chart."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from fcn_research.callbacks.probe import tensorboard

LAYOUT = {
    "depth": {
        "gradient norm per layer": ["Multiline", [r"grad_norm/layer_\d+"]],
        "gradient RMS per weight, per layer": ["Multiline", [r"grad_rms/layer_\d+"]],
        "dead fraction per layer": ["Multiline", [r"neurons/dead_fraction/layer_\d+"]],
        "saturated fraction per layer": ["Multiline", [r"neurons/saturated_fraction/layer_\d+"]],
        "activation std per layer": ["Multiline", [r"activations/std/layer_\d+"]],
    },
    "training": {
        "loss": ["Multiline", [r"train/loss", r"val/loss"]],
        "accuracy": ["Multiline", [r"train/acc", r"val/acc"]],
    },
}


class ScalarsLayout(Callback):
    """Writes ``LAYOUT`` once per run, so depth effects read at a glance in Custom Scalars."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is not None and trainer.global_rank == 0:
            writer.add_custom_scalars(LAYOUT)
