"""The fraction of zero weights: what magnitude pruning (Lightning's ModelPruning) achieved."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from fcn_research.callbacks.probe import layer_tag, mlp_of, to_host, write_members
from fcn_research.model import StackedMLP
from fcn_research.recording import Recorded


def weight_sparsity(model: StackedMLP) -> dict[str, Tensor]:
    """``pruning/sparsity/layer_XX`` per Linear and ``pruning/sparsity`` over all their weights,
    per member: (M,) tensors.

    Reads ``linear.weight``, which under ``torch.nn.utils.prune`` is the masked weight.
    """
    values, zeros, total = {}, torch.zeros(()), 0
    for i, linear in enumerate(model.linears, 1):
        z = (linear.weight == 0).flatten(1).sum(1)
        size = linear.weight[0].numel()
        values[layer_tag("pruning/sparsity", i)] = z / size
        zeros, total = zeros.to(z.device) + z, total + size
    values["pruning/sparsity"] = zeros / total
    return values


class WeightSparsity(Callback, Recorded):
    """Logs the weights' sparsity at step 0, after every training epoch and at the end.

    The final values go to result.json's ``metrics``, the step-0 ones to its ``init``
    (``Recorded``). Place it after the pruning callback so an epoch's value includes that
    epoch's pruning.
    """

    def __init__(self) -> None:
        self.init_metrics: list[dict[str, float]] = []
        self.final_metrics: list[dict[str, float]] = []

    def init_values(self) -> list[dict[str, float]]:
        return self.init_metrics

    def final_values(self) -> list[dict[str, float]]:
        return self.final_metrics

    def _event(
        self, trainer: L.Trainer, pl_module: L.LightningModule, at_end: bool = False
    ) -> list[dict[str, float]]:
        values = to_host(weight_sparsity(mlp_of(pl_module)))
        write_members(trainer, values, trainer.global_step, at_end)
        return values

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self.init_metrics = self._event(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._event(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.final_metrics = self._event(trainer, pl_module, at_end=True)
