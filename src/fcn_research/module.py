"""The LightningModule: task-dependent loss and metrics around an MLP."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from fcn_research.data.base import Task
from fcn_research.loggers import log_member_metrics
from fcn_research.model import StackedMLP
from fcn_research.private_internals import set_logging_step
from fcn_research.stacked_optim import stacked_optimizer

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def backward_is_plain(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether Lightning's ``manual_backward`` would do nothing but ``loss.backward()``.

    True on one device at 32-bit precision, with no profiler and no callback or module hook
    on backward: then its hook dispatch (two hooks x every callback, every optimizer step,
    felt in a small MLP's step) has no listener and can be skipped. Anything else
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
    """Trains a stack of ``M`` MLPs (``StackedMLP``; a single run is a stack of one) for a
    binary, multi-class or regression task.

    Every member has its own loss (the mean over its own mini-batch); their sum is
    backpropagated, so each member's gradient is its own loss's and members never mix.
    Logs ``train/loss``, ``val/loss`` and ``train/acc``, ``val/acc`` (classification) or
    ``val/mse`` (regression) once per epoch, each a mean over the epoch's samples, at the
    optimizer step where the epoch ended (``trainer.global_step``, the axis every instrument
    uses): a stack of one through ``self.log``, as any Lightning module; a stack of several
    into each member's own logger (``trainer.loggers[m]``). ``trainer.test`` logs
    ``test/loss`` and ``test/acc`` or ``test/mse`` the same way. A batch may be a list of
    mini-batches: one optimizer step each, in order (``steps_per_batch``). A member whose epoch
    loss is non-finite is marked diverged (``train/diverged`` = 1) and stops updating, at the
    step and epoch where its solo run would stop (``stopped_at``): nothing of it is logged after
    that but the end of training's values, at its own stop step (``event_steps``); so is a
    member that early stopping stops (``MemberEarlyStopping``). The run stops when every
    member has.
    """

    def __init__(
        self,
        model: StackedMLP,
        task: Task,
        num_classes: int,
        optimizer: OptimizerFactory | Sequence[OptimizerFactory],
    ) -> None:
        super().__init__()
        self.model = model
        self.members = model.members
        self.task = task
        self.num_classes = num_classes
        factories = [optimizer] if callable(optimizer) else list(optimizer)
        if len(factories) != self.members:
            raise ValueError(
                f"need one optimizer per member ({self.members}), got {len(factories)}"
            )
        self.optimizer_factories = factories
        self.diverged = [False] * self.members
        # Per member that stopped (diverged, or stopped early): (global_step, epochs) where it
        # stopped; None while it trains.
        self.stopped_at: list[tuple[int, int] | None] = [None] * self.members
        # Per member: the run's flat hparams (set by train()) and its last epoch metrics.
        self.run_hparams: list[dict[str, object]] = [{} for _ in range(self.members)]
        self.member_metrics: list[dict[str, float]] = [{} for _ in range(self.members)]
        self.metric_name = "mse" if task == "regression" else "acc"
        # Optimization is written out (Lightning's manual mode): it lets one Lightning batch
        # hold several mini-batches, and skips automatic optimization's per-step closures.
        self.automatic_optimization = False
        # The epoch's per-member sums (loss and metric stay on the device; the host reads
        # them at its end). A dict, so per-step updates don't go through nn.Module.__setattr__.
        self._epoch_sums: dict[str, Any] = {}
        self._val_sums: dict[str, Any] = {}
        self._plain_backward = False  # set at on_train_start (backward_is_plain)
        # A stack's epoch-end validation records, held to go out with the train records of
        # the same step (log_members): one event per member and epoch, not two.
        self._held: dict[str, Any] = {}
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
        """Each member's loss (M,) and the predictions (M, B, ...) its metric compares with
        ``y``; ``x`` is (M, B, ...) with ``y`` (M, B), or (B, ...) with ``y`` (B) for all."""
        out = self.model(x)
        if out.shape[0] == 1:  # a stack of one: the solo run's loss, computed as it is
            loss, pred = self._single_loss(out.squeeze(0), y.squeeze(0) if y.dim() == 2 else y)
            return loss.unsqueeze(0), pred.unsqueeze(0)
        y = y.expand(out.shape[0], *y.shape[-1:]) if y.dim() == 1 else y
        if self.task == "multiclass":
            loss = F.cross_entropy(out.transpose(1, 2), y, reduction="none")
            return loss.mean(1), out
        out = out.squeeze(-1)
        if self.task == "binary":
            loss = F.binary_cross_entropy_with_logits(out, y, reduction="none")
            return loss.mean(1), torch.sigmoid(out)
        return F.mse_loss(out, y, reduction="none").mean(1), out

    def _single_loss(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.task == "multiclass":
            return F.cross_entropy(out, y), out
        out = out.squeeze(-1)
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(out, y), torch.sigmoid(out)
        return F.mse_loss(out, y), out

    def _metric_sum(self, pred: Tensor, y: Tensor) -> Tensor:
        """Per member (M,): correct predictions (classification) or squared errors
        (regression), summed over the batch."""
        # Not torchmetrics: its functional metrics give each member's batch mean (samplewise),
        # not the sum an epoch of unequal batches adds up exactly; they squeeze a stack of one;
        # their one-hot path costs several times this on every training step; and its mean
        # squared error has no per-member form.
        y = y.expand(pred.shape[0], *y.shape[-1:]) if y.dim() == 1 else y
        if self.task == "multiclass":
            return (pred.argmax(-1) == y).sum(1)
        if self.task == "binary":
            return ((pred > 0.5) == (y > 0.5)).sum(1)
        return (pred - y).pow(2).sum(1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        # A batch is one (x, y) mini-batch, or a list of them (``steps_per_batch``).
        pairs = batch if isinstance(batch, list) else [batch]
        optimizer = self.optimizers()
        trainer = self.trainer
        max_steps = trainer.max_steps
        for x, y in pairs:
            total, loss, pred = self._train_losses(x, y)
            self._accumulate(loss.detach(), self._metric_sum(pred.detach(), y), y.shape[-1])
            if self._plain_backward:
                total.backward()
            else:
                self.manual_backward(total)
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
        set_logging_step(trainer, trainer.global_step)
        return loss.detach()

    def _train_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The loss to backpropagate, each member's loss (M,) and the predictions, as
        ``loss_and_predictions`` gives them."""
        if self.members > 1:
            loss, pred = self.loss_and_predictions(x, y)
            # Members are independent: the sum's gradient is each member's own loss's.
            return loss.sum(), loss, pred
        # A stack of one backpropagates the solo loss itself: no member axis to select it
        # from again (two more autograd nodes on every step of a small network).
        out = self.model(x)
        loss, pred = self._single_loss(out.squeeze(0), y.squeeze(0) if y.dim() == 2 else y)
        return loss, loss.unsqueeze(0), pred.unsqueeze(0)

    def _accumulate(self, loss: Tensor, metric_sum: Tensor, samples: int) -> None:
        # In place on the device: a training step never waits for the host.
        sums = self._epoch_sums
        sums["loss"].add_(loss * samples)  # sample-weighted: a short last batch counts less
        sums["metric"].add_(metric_sum)
        sums["samples"] += samples

    def on_train_start(self) -> None:
        self._plain_backward = backward_is_plain(self.trainer, self)
        self.freeze_stopped()

    def freeze_stopped(self) -> None:
        """A member of a stack that stopped (diverged, or stopped early: ``stopped_at``) stops
        updating; the others go on as they would alone."""
        frozen = [d or s is not None for d, s in zip(self.diverged, self.stopped_at, strict=True)]
        if self.members > 1 and any(frozen):
            optimizer = self.optimizers()
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.frozen = torch.tensor(frozen, device=self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["members_diverged"] = list(self.diverged)
        checkpoint["members_stopped_at"] = [list(s) if s else None for s in self.stopped_at]
        # A stopped member logs no more epochs: a resumed run has only these as its last.
        checkpoint["members_stopped_metrics"] = [
            dict(m) if s else {} for m, s in zip(self.member_metrics, self.stopped_at, strict=True)
        ]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.diverged = list(checkpoint.get("members_diverged", self.diverged))
        stopped = checkpoint.get("members_stopped_at", self.stopped_at)
        self.stopped_at = [(int(s[0]), int(s[1])) if s else None for s in stopped]
        kept = checkpoint.get("members_stopped_metrics", [{}] * self.members)
        self.member_metrics = [dict(m) for m in kept]

    def event_steps(self, step: int, at_end: bool = False) -> list[int | None]:
        """Per member, the step at which an event of the stack at ``step`` is logged for it, or
        None: not at all. A member that stopped (diverged) gets no event after its stop, as its
        solo run, except the end of training's (``at_end``: the last measurements, the test
        split), which its solo run logs at its stop step (its weights have not changed since)."""
        return [step if stop is None else (stop[0] if at_end else None) for stop in self.stopped_at]

    def _zeros(self) -> dict[str, Any]:
        device = self.device
        return {
            "loss": torch.zeros(self.members, device=device),
            "metric": torch.zeros(self.members, device=device),
            "samples": 0,
        }

    def on_train_epoch_start(self) -> None:
        self._epoch_sums.update(self._zeros())

    def log_members(
        self, values: dict[str, Tensor], prog_bar: bool = False, hold: bool = False
    ) -> list[dict]:
        """Log per-member values ``{tag: (M,) tensor}`` at this step; return them per member
        as host floats (one transfer).

        A stack of one logs through ``self.log`` (Lightning's callback metrics, progress bar
        and loggers, as any module); a stack of several writes each member's values into its
        own logger and shows the members' mean on the progress bar. With ``hold`` a stack's
        records wait for the next call, and go out with its records where the steps agree
        (``on_train_end`` writes any still held).
        """
        tags = list(values)
        host = torch.stack([values[t].detach().float() for t in tags]).cpu()
        # One (M, tags) read into host lists, not one per member.
        per_member = [dict(zip(tags, row, strict=True)) for row in host.T.tolist()]
        # Outside fit (the test split, a validation after it): the end of training's values.
        steps = self.event_steps(
            self.trainer.global_step, self.trainer.state.fn != TrainerFn.FITTING
        )
        if self.members == 1:
            for tag in tags:
                self.log(tag, values[tag][0], sync_dist=True, prog_bar=prog_bar)
        else:
            if self.trainer.global_rank == 0:
                # Like Lightning's own logging, every record carries the epoch; but a stopped
                # member's (the end of training's, at its stop step): its solo run's logger
                # writes one epoch per step, already given there with its last epoch's values.
                epoch = self.trainer.current_epoch
                records = [
                    {**values, "epoch": epoch} if stop is None else values
                    for values, stop in zip(per_member, self.stopped_at, strict=True)
                ]
                self._write_records(records, steps, hold)
            if prog_bar:
                for tag in tags:
                    self.log(tag, values[tag].nanmean(), logger=False, prog_bar=True)
        for member, metrics, step in zip(self.member_metrics, per_member, steps, strict=True):
            if step is not None:  # a stopped member keeps its values from where it stopped
                member.update(metrics)
        return per_member

    def _write_records(
        self, records: list[dict[str, float]], steps: list[int | None], hold: bool
    ) -> None:
        """Each member's record into its loggers at its step, joined with the held one where
        the held one's step is the same (the held ones first where not); or, with ``hold``,
        held in their turn. Each logger still gets every value through ``log_metrics``."""
        held = self._held.pop("records", None)
        if held is not None:
            held_records, held_steps = held
            if not hold:
                for m, (held_step, step) in enumerate(zip(held_steps, steps, strict=True)):
                    if held_step is not None and held_step == step:
                        records[m] = {**records[m], **held_records[m]}
                        held_steps[m] = None  # goes out with this record
            log_member_metrics(self.trainer, held_records, held_steps)
        if hold:
            self._held["records"] = (records, steps)
        else:
            log_member_metrics(self.trainer, records, steps)

    def on_train_end(self) -> None:
        if "records" in self._held:  # a validation with no train records after it
            self._write_records([{}] * self.members, [None] * self.members, hold=False)

    def on_train_epoch_end(self) -> None:
        sums = self._epoch_sums
        if not sums["samples"]:
            return
        loss = sums["loss"] / sums["samples"]
        diverged = ~torch.isfinite(loss) | torch.tensor(self.diverged, device=loss.device)
        logged = self.log_members(
            {
                "train/loss": loss,
                f"train/{self.metric_name}": sums["metric"] / sums["samples"],
                # A TensorBoard tag, and a metric that reaches train() even from ddp_spawn's
                # workers.
                "train/diverged": diverged.float(),
            }
        )
        self.diverged = [bool(m["train/diverged"]) for m in logged]  # the epoch's host read
        for m, diverged in enumerate(self.diverged):
            if diverged and self.stopped_at[m] is None:  # as its solo run's trainer counts
                self.stopped_at[m] = (self.trainer.global_step, self.trainer.current_epoch + 1)
        if all(self.diverged):
            self.trainer.should_stop = True
        else:
            self.freeze_stopped()

    def on_validation_epoch_start(self) -> None:
        self._val_sums = self._zeros()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        loss, pred = self.loss_and_predictions(x, y)
        sums = self._val_sums
        sums["loss"] += loss.detach() * len(x)
        sums["metric"] += self._metric_sum(pred.detach(), y)
        sums["samples"] += len(x)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def _log_evaluation(self, split: str) -> None:
        # Two logs per epoch, not two per batch: each Lightning self.log call has a fixed cost.
        sums = self._val_sums
        if sums["samples"]:
            # On the progress bar: validation ends before the bar's epoch-end refresh (train/*,
            # logged in on_train_epoch_end, would show there one epoch late).
            self.log_members(
                {
                    f"{split}/loss": sums["loss"] / sums["samples"],
                    f"{split}/{self.metric_name}": sums["metric"] / sums["samples"],
                },
                prog_bar=True,
                # A validation in fit: its records join the train records of the epoch's
                # end (the same step), which follow it.
                hold=self.trainer.state.fn == TrainerFn.FITTING,
            )

    # The test split is evaluated as validation is, once, after fit (train.evaluate_test).
    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return stacked_optimizer(self.optimizer_factories, self.parameters())
