"""The LightningModule: task-dependent loss and metrics around an MLP."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from fcn_research.data.base import Task

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class FCNModule(L.LightningModule):
    """Trains ``model`` for a binary, multi-class or regression task.

    Logs ``train/loss``, ``val/loss`` and ``train/acc``, ``val/acc`` (classification) or
    ``val/mse`` (regression) once per epoch. A non-finite epoch loss marks the run as
    diverged (``train/diverged`` = 1) and stops training.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        num_classes: int,
        optimizer: OptimizerFactory,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.optimizer_factory = optimizer
        self.diverged = False
        self.run_hparams: dict[str, object] = {}  # the run's flat hparams, set by train()
        if task == "regression":
            self.train_metric, self.val_metric = (
                torchmetrics.MeanSquaredError(),
                torchmetrics.MeanSquaredError(),
            )
            self.metric_name = "mse"
        else:
            kwargs = (
                {"task": task} if task == "binary" else {"task": task, "num_classes": num_classes}
            )
            self.train_metric = torchmetrics.Accuracy(**kwargs)
            self.val_metric = torchmetrics.Accuracy(**kwargs)
            self.metric_name = "acc"
        self._train_loss_sum = torch.zeros(())
        self._train_batches = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def loss_and_predictions(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The task's loss and the predictions its metric compares with ``y``."""
        out = self.model(x)
        if self.task == "multiclass":
            return F.cross_entropy(out, y), out
        out = out.squeeze(-1)
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(out, y), torch.sigmoid(out)
        return F.mse_loss(out, y), out

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, pred = self.loss_and_predictions(x, y)
        # Accumulate on the device; the host sees the epoch's mean once, at epoch end.
        self._train_loss_sum = self._train_loss_sum.to(loss.device) + loss.detach()
        self._train_batches += 1
        self.train_metric.update(pred.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        if not self._train_batches:
            return
        loss = self._train_loss_sum / self._train_batches
        self._train_loss_sum = torch.zeros((), device=loss.device)
        self._train_batches = 0
        self.log("train/loss", loss, sync_dist=True)
        self.log(f"train/{self.metric_name}", self.train_metric.compute())
        self.train_metric.reset()
        diverged = not torch.isfinite(loss)
        # A TensorBoard tag, and a metric that reaches train() even from ddp_spawn's workers.
        self.log("train/diverged", float(diverged))
        if diverged:
            self.diverged = True
            self.trainer.should_stop = True

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        loss, pred = self.loss_and_predictions(x, y)
        self.val_metric.update(pred, y)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(x))
        self.log(f"val/{self.metric_name}", self.val_metric, on_epoch=True, batch_size=len(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
