"""What training measured, written into each member's result.json by the process that trained."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from fcn_research.results import read_result, update_result


@runtime_checkable
class Recorded(Protocol):
    """A callback whose values go into each member's result.json (``ResultRecorder``): the
    instruments implement it, and so can a user's callback (subclass it, or define both).

    Each method returns one dict ``{tag: value}`` per member of the stack (a single run: a
    list of one), with the same tags the callback logs; an empty list until measured.
    """

    def init_values(self) -> list[dict[str, float]]:
        """Per member, the values at step 0, before any update (result.json's ``init``). Read
        at the first optimizer step and at the end of training: keep them in the checkpoint
        (``state_dict``) so a resumed run still has them."""
        ...

    def final_values(self) -> list[dict[str, float]]:
        """Per member, the values at the end of training (into result.json's ``metrics``)."""
        ...


def _callback_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)}


def _collect(trainer: L.Trainer, final: bool, members: int) -> list[dict[str, float]]:
    """Per member, the ``Recorded`` callbacks' step-0 (or ``final``) values merged."""
    values: list[dict[str, float]] = [{} for _ in range(members)]
    for callback in trainer.callbacks:
        if isinstance(callback, Recorded):
            theirs = callback.final_values() if final else callback.init_values()
            for mine, member in zip(values, theirs or [], strict=False):
                mine.update(member)
    return values


def _epoch_metrics(trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict[str, float]]:
    """Per member, its last logged epoch metrics; a stack of one also takes Lightning's callback
    metrics (what a user's callback logged through ``self.log`` too)."""
    members = [dict(m) for m in getattr(pl_module, "member_metrics", None) or [{}]]
    if len(members) == 1:
        members[0].update(_callback_metrics(trainer))
    return members


class ResultRecorder(Callback):
    """Writes into each member's ``<job_dir>/result.json``, on rank 0 of the process that
    trains (a single run: a stack of one, one job dir):

    - the ``Recorded`` callbacks' step-0 values (``init``) as soon as they are measured, so a
      job killed later and resumed keeps them (the instruments also carry them in the
      checkpoint);
    - at the end of training: the final ``metrics`` (the module's epoch metrics, Lightning's
      callback metrics and the ``Recorded`` callbacks' final values), ``epochs`` and
      ``global_step``;
    - after a ``trainer.validate`` of the trained network: its metrics, in place of the fit's.
    - after a ``trainer.test``: the ``test/*`` metrics, beside the fit's.

    ``train()`` reads them back after ``fit``: one path for a single process and for
    ``ddp_spawn``, whose workers hand none of their callback state back to the launcher.
    It must come after the instruments in the callback list, so their values exist.
    """

    def __init__(self, job_dirs: str | Path | Sequence[str | Path]) -> None:
        dirs = [job_dirs] if isinstance(job_dirs, str | Path) else list(job_dirs)
        self.job_dirs = [Path(d) for d in dirs]
        self._init_written = False

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if trainer.global_step == 0 and not self._init_written and trainer.global_rank == 0:
            self._init_written = True
            inits = _collect(trainer, False, len(self.job_dirs))
            for job_dir, init in zip(self.job_dirs, inits, strict=True):
                if init:
                    update_result(job_dir, init=init)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        members = len(self.job_dirs)
        metrics = _epoch_metrics(trainer, pl_module)
        finals = _collect(trainer, True, members)
        inits = _collect(trainer, False, members)
        # A member that stopped (diverged) early ends where its solo run would.
        stopped = getattr(pl_module, "stopped_at", None) or [None] * members
        for m, job_dir in enumerate(self.job_dirs):
            # A resumed run's instruments restored their step-0 values from the checkpoint;
            # anything they lack (a checkpoint from an older version) stays as result.json has.
            init = {**(read_result(job_dir) or {}).get("init", {}), **inits[m]}
            update_result(
                job_dir,
                init=init,
                metrics={**metrics[m], **finals[m]},
                epochs=stopped[m][1] if stopped[m] else trainer.current_epoch,
                global_step=stopped[m][0] if stopped[m] else trainer.global_step,
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only a validation after fit (train() re-validates a network pruned after its last
        # validation); the fit's own validations reach result.json through on_train_end.
        if trainer.state.fn != TrainerFn.VALIDATING or trainer.global_rank != 0:
            return
        for job_dir, metrics in zip(
            self.job_dirs, _epoch_metrics(trainer, pl_module), strict=False
        ):
            before = (read_result(job_dir) or {}).get("metrics", {})
            update_result(job_dir, metrics={**before, **metrics})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        for job_dir, metrics in zip(
            self.job_dirs, _epoch_metrics(trainer, pl_module), strict=False
        ):
            before = (read_result(job_dir) or {}).get("metrics", {})
            tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
            update_result(job_dir, metrics={**before, **tested})
