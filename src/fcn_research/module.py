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
            self.val_metric = torchmetrics.MeanSquaredError()
            self.metric_name = "mse"
        else:
            kwargs = (
                {"task": task} if task == "binary" else {"task": task, "num_classes": num_classes}
            )
            self.val_metric = torchmetrics.Accuracy(**kwargs)
            self.metric_name = "acc"
        # [loss sum over batches, metric sum over samples, batches, samples], on the device:
        # training steps never wait for the host; it reads the epoch's means once, at its end.
        self._train_sums = torch.zeros(4)

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

    def _metric_sum(self, pred: Tensor, y: Tensor) -> Tensor:
        """Correct predictions (classification) or squared errors (regression), summed."""
        if self.task == "multiclass":
            return (pred.argmax(-1) == y).sum()
        if self.task == "binary":
            return ((pred > 0.5) == (y > 0.5)).sum()
        return (pred - y).pow(2).sum()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss, pred = self.loss_and_predictions(x, y)
        step = torch.stack(
            [
                loss.detach(),
                self._metric_sum(pred.detach(), y).float(),
                loss.new_ones(()),
                loss.new_tensor(float(len(x))),
            ]
        )
        self._train_sums = self._train_sums.to(loss.device) + step
        return loss

    def on_train_epoch_end(self) -> None:
        loss_sum, metric_sum, batches, samples = self._train_sums.unbind()
        self._train_sums = torch.zeros_like(self._train_sums)
        if batches == 0:  # one host read per epoch
            return
        loss = loss_sum / batches
        self.log("train/loss", loss, sync_dist=True)
        self.log(f"train/{self.metric_name}", metric_sum / samples, sync_dist=True)
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
