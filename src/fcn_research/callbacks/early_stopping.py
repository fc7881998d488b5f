"""Lightning's EarlyStopping applied to each member of a stack on its own."""

from __future__ import annotations

import copy
import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from fcn_research.stack_spec import CALLBACK_MEMBER_SCALARS

log = logging.getLogger(__name__)


class MemberEarlyStopping(EarlyStopping):
    """``EarlyStopping`` (as configured: monitor, min_delta, patience, mode, thresholds) run
    by Lightning's own rule for every member of a stack, each on its own monitored value.

    A member that Lightning would stop is frozen at the step and epoch where its solo run
    stops (``FCNModule.stopped_at``) and the stack stops when every member has. Checked where
    Lightning checks (``check_on_train_epoch_end``); the decision takes effect at the epoch's
    end, after the module logged it, as the solo run's last epoch. Its state holds one entry
    per member (``CALLBACK_MEMBER_SCALARS``), under the state key of the callback it copies,
    so each member's part of a checkpoint is its solo run's.
    """

    def __init__(self, template: EarlyStopping, members: int) -> None:
        super().__init__(
            monitor=template.monitor,
            patience=template.patience,
            mode=template.mode,
            check_on_train_epoch_end=template._check_on_train_epoch_end,
        )
        self.template_state_key = template.state_key
        self.per_member = [copy.deepcopy(template) for _ in range(members)]
        self._due: set[int] = set()

    @property
    def state_key(self) -> str:
        return self.template_state_key

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        for callback in self.per_member:
            callback.setup(trainer, pl_module, stage)

    def state_dict(self) -> dict[str, Any]:
        states = [callback.state_dict() for callback in self.per_member]
        return {
            key: [s[key] for s in states] if key in CALLBACK_MEMBER_SCALARS else value
            for key, value in states[0].items()
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for m, callback in enumerate(self.per_member):
            callback.load_state_dict(
                {k: v[m] if k in CALLBACK_MEMBER_SCALARS else v for k, v in state_dict.items()}
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._check_on_train_epoch_end or self._should_skip_check(trainer):
            return
        self._check_members(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._check_on_train_epoch_end and not self._should_skip_check(trainer):
            self._check_members(trainer, pl_module)
        due, self._due = self._due, set()
        stopped_at = pl_module.stopped_at
        for m in sorted(due):
            if stopped_at[m] is None:  # as its solo run's trainer counts
                stopped_at[m] = (trainer.global_step, trainer.current_epoch + 1)
        if due:
            pl_module.freeze_stopped()
        if all(stop is not None for stop in stopped_at):  # early, or diverged
            trainer.should_stop = True

    def _check_members(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning's check (``_run_early_stopping_check``) for each member that still trains,
        on its own logged values (``FCNModule.member_metrics``)."""
        if trainer.fast_dev_run:
            return
        for m, callback in enumerate(self.per_member):
            # A member stopped before this epoch has no new values; one stopped in it (it
            # diverged) is checked as its solo run's callback is.
            stop = pl_module.stopped_at[m]
            if stop is not None and stop[0] != trainer.global_step:
                continue
            logs = pl_module.member_metrics[m]
            if not callback._validate_condition_metric(logs):
                continue
            # The logged float32 value, as Lightning's callback_metrics hold it.
            current = torch.tensor(logs[self.monitor], dtype=torch.float32)
            should_stop, reason = callback._evaluate_stopping_criteria(current)
            if should_stop:
                callback.stopped_epoch = trainer.current_epoch
                callback.stopping_reason_message = reason
                self._due.add(m)
            if reason and callback.verbose:
                log.info("member %d: %s", m, reason)
