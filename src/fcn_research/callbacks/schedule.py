"""When instruments log: dense early, sparse later, counted on ``trainer.global_step``."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from fcn_research.callbacks.probe import member_steps, member_writers
from fcn_research.recording import Recorded


class LogSchedule:
    """Log at step 0, then with an interval that grows tenfold per decade of steps.

    The interval at step ``s`` is ``10 ** floor(log10(s))`` clipped to
    ``[min_interval, max_interval]``: with the defaults (1, 1000) that is every step up to
    10, every 10 up to 100, every 100 up to 1000, then every 1000. Early training, where
    vanishing gradients and dying units show, is sampled finely; long runs stay cheap.
    """

    def __init__(self, min_interval: int = 1, max_interval: int = 1000) -> None:
        if min_interval < 1 or max_interval < min_interval:
            raise ValueError(
                "need 1 <= min_interval <= max_interval, got "
                f"min_interval={min_interval}, max_interval={max_interval}"
            )
        self.min_interval = min_interval
        self.max_interval = max_interval

    def interval(self, step: int) -> int:
        """The logging interval in force at ``step``."""
        decade = 10 ** int(math.log10(step)) if step > 0 else 1
        return min(self.max_interval, max(self.min_interval, decade))

    def __call__(self, step: int) -> bool:
        return step == 0 or step % self.interval(step) == 0


class StepInstrument(Callback, Recorded):
    """Base of the instruments that measure the network at step 0, on the schedule and at
    the end of training, on rank 0 (where the logger lives).

    They measure in ``on_before_optimizer_step``, where ``trainer.global_step`` updates have
    been applied and the next has not, so step 0 is the network at initialization.
    Subclasses implement ``measure``, once for every member of the stack; the step-0 values
    become ``init_metrics`` (one dict per member: result.json's ``init``, kept in the
    checkpoint so a resumed run still has them), the end-of-training values ``final_metrics``
    (``Recorded``: ``init_values``, ``final_values``).
    ``at_end`` is True while the end of training is measured: a member that stopped earlier
    (diverged) gets those values at its own stop step, and nothing between (``write_members``).
    """

    def __init__(self, min_interval: int = 1, max_interval: int = 1000) -> None:
        self.schedule = LogSchedule(min_interval, max_interval)
        self.init_metrics: list[dict[str, float]] = []
        self.final_metrics: list[dict[str, float]] = []
        self.at_end = False

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> list[dict[str, float]]:
        """Measure every member on the stacked tensors, log each member's values into its own
        loggers at ``step`` (``write_members(trainer, values, step, self.at_end)``),
        and return them (host floats, one dict per member)."""
        raise NotImplementedError

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        step = trainer.global_step
        if trainer.global_rank == 0 and self.schedule(step):
            values = self.measure(trainer, pl_module, step)
            if step == 0:
                self.init_metrics = values

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0:
            self.at_end = True
            try:
                self.final_metrics = self.measure(trainer, pl_module, trainer.global_step)
            finally:
                self.at_end = False

    def init_values(self) -> list[dict[str, float]]:
        return self.init_metrics

    def final_values(self) -> list[dict[str, float]]:
        return self.final_metrics

    def state_dict(self) -> dict[str, Any]:
        return {"init_metrics": [dict(m) for m in self.init_metrics]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.init_metrics = [dict(m) for m in state_dict.get("init_metrics", [])]


class EpochImages(Callback):
    """Base of the instruments that draw images: at step 0, at epoch ends on the schedule
    (counted in epochs) and at the end, on the data they apply to, on rank 0 only."""

    def __init__(self, min_interval: int = 1, max_interval: int = 100) -> None:
        self.schedule = LogSchedule(min_interval, max_interval)

    def applies(self, datamodule: Any) -> bool:
        """Whether the images make sense for this data (e.g. 2-D inputs)."""
        raise NotImplementedError

    def draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, runs: list[tuple[Any, int] | None]
    ) -> None:
        """Render every member's images (one evaluation of the stack) and write member m's
        into its writer at its step (``runs[m]``: writer and step; None: write nothing)."""
        raise NotImplementedError

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, at_end: bool = False) -> None:
        writers = member_writers(trainer)
        steps = member_steps(trainer, trainer.global_step, len(writers), at_end)
        # Images go to TensorBoard only: a member without its writer draws nothing.
        runs = [
            None if s is None or w is None else (w, s) for w, s in zip(writers, steps, strict=False)
        ]
        if any(runs) and self.applies(trainer.datamodule):
            self.draw(trainer, pl_module, runs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self._log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        if self.schedule(epochs_done) and epochs_done < trainer.max_epochs:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, at_end=True)
