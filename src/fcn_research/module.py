"""The LightningModule: task-dependent loss and metrics around an MLP."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from fcn_research.data.base import Task

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def backward_is_plain(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether Lightning's ``manual_backward`` would do nothing but ``loss.backward()``.

    True on one device at 32-bit precision, with no profiler and no callback or module hook
    on backward: then its hook dispatch (two hooks x every callback, every optimizer step:
    ~4 % of a small MLP's step on CPU) has no listener and can be skipped. Anything else
    (DDP, mixed precision, a user's ``on_after_backward``) keeps Lightning's path.
    """
    strategy = trainer.strategy
    if (
        type(strategy) is not SingleDeviceStrategy
        or type(strategy.precision_plugin) is not Precision
    ):
        return False
    if not isinstance(trainer.profiler, PassThroughProfiler):
        return False
    if any(is_overridden(h, module, L.LightningModule) for h in (*_BACKWARD_HOOKS, "backward")):
        return False
    return not any(
        is_overridden(h, cb, L.Callback) for cb in trainer.callbacks for h in _BACKWARD_HOOKS
    )


class FCNModule(L.LightningModule):
    """Trains ``model`` for a binary, multi-class or regression task.

    Logs ``train/loss``, ``val/loss`` and ``train/acc``, ``val/acc`` (classification) or
    ``val/mse`` (regression) once per epoch, each a mean over the epoch's samples, at the
    optimizer step where the epoch ended (``trainer.global_step``, the axis every instrument
    uses). ``trainer.test`` logs ``test/loss`` and ``test/acc`` or ``test/mse`` the same way.
    A batch may be a list of mini-batches: one optimizer step each, in order (the
    datamodule's ``steps_per_batch``). A non-finite epoch loss marks the run as diverged
    (``train/diverged`` = 1) and stops it.
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
        # Optimization is written out (Lightning's manual mode): it lets one Lightning batch
        # hold several mini-batches, and skips automatic optimization's per-step closures.
        self.automatic_optimization = False
        # The epoch's sums (loss and metric stay on the device; the host reads them at its end).
        # A dict, so per-step updates don't go through nn.Module.__setattr__.
        self._epoch_sums: dict[str, Any] = {
            "loss": torch.zeros(()),
            "metric": torch.zeros(()),
            "samples": 0,
        }
        self._plain_backward = False  # set at on_train_start (backward_is_plain)
        # The Trainer's gradient clipping, which manual optimization leaves to the module
        # (set by fcn_research.trainer_options.move_gradient_clipping; None: no clipping).
        self.gradient_clip_val: float | None = None
        self.gradient_clip_algorithm: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this after the callbacks' on_before_optimizer_step, inside
        # optimizer.step(): the instruments see the gradient unclipped, as Lightning documents.
        if self.gradient_clip_val is not None:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

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

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        # A batch is one (x, y) mini-batch, or a list of them (``steps_per_batch``).
        pairs = batch if isinstance(batch, list) else [batch]
        optimizer = self.optimizers()
        trainer = self.trainer
        max_steps = trainer.max_steps
        for x, y in pairs:
            loss, pred = self.loss_and_predictions(x, y)
            self._accumulate(loss.detach(), self._metric_sum(pred.detach(), y), len(x))
            if self._plain_backward:
                loss.backward()
            else:
                self.manual_backward(loss)
            optimizer.step()  # Lightning counts global_step and calls the instruments' hooks
            optimizer.zero_grad()
            if 0 <= max_steps <= trainer.global_step:
                break
        # self.log's x axis is Lightning's own count of Lightning batches, which here hold
        # several optimizer steps each, and it puts epoch-end metrics at the last batch's
        # index (one before the epoch's end). Set to the optimizer steps taken so far, every
        # tag of the run shares one axis, trainer.global_step, and epoch-end metrics sit at
        # the step where the epoch ended. (A private counter, set afresh every batch, so a
        # resumed run is right too; test_every_tag_shares_the_optimizer_step_axis pins it.)
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
        return loss.detach()

    def _accumulate(self, loss: Tensor, metric_sum: Tensor, samples: int) -> None:
        # In place on the device: a training step never waits for the host.
        sums = self._epoch_sums
        if sums["loss"].device != loss.device:
            sums["loss"], sums["metric"] = (
                sums["loss"].to(loss.device),
                sums["metric"].to(loss.device),
            )
        sums["loss"].add_(loss * samples)  # sample-weighted: a short last batch counts less
        sums["metric"].add_(metric_sum)
        sums["samples"] += samples

    def on_train_start(self) -> None:
        self._plain_backward = backward_is_plain(self.trainer, self)

    def on_train_epoch_start(self) -> None:
        device = self.device
        self._epoch_sums.update(
            loss=torch.zeros((), device=device),
            metric=torch.zeros((), device=device),
            samples=0,
        )

    def on_train_epoch_end(self) -> None:
        sums = self._epoch_sums
        if not sums["samples"]:
            return
        loss = sums["loss"] / sums["samples"]
        self.log("train/loss", loss, sync_dist=True)
        self.log(f"train/{self.metric_name}", sums["metric"] / sums["samples"], sync_dist=True)
        diverged = not torch.isfinite(loss)  # the epoch's one host read
        # A TensorBoard tag, and a metric that reaches train() even from ddp_spawn's workers.
        self.log("train/diverged", float(diverged))
        if diverged:
            self.diverged = True
            self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum = torch.zeros((), device=self.device)
        self._val_samples = 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        loss, pred = self.loss_and_predictions(x, y)
        self.val_metric.update(pred, y)
        self._val_loss_sum += loss.detach() * len(x)
        self._val_samples += len(x)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def _log_evaluation(self, split: str) -> None:
        # Two logs per epoch, not two per batch: Lightning's self.log costs ~0.3 ms a call.
        if self._val_samples:
            # On the progress bar: validation ends before the bar's epoch-end refresh (train/*,
            # logged in on_train_epoch_end, would show there one epoch late).
            loss = self._val_loss_sum / self._val_samples
            self.log(f"{split}/loss", loss, sync_dist=True, prog_bar=True)
            metric = self.val_metric.compute()
            self.log(f"{split}/{self.metric_name}", metric, sync_dist=True, prog_bar=True)
        self.val_metric.reset()

    # The test split is evaluated as validation is, once, after fit (train.evaluate_test).
    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
