"""What training measured, written into the job's result.json by the process that trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from fcn_research.results import read_result, update_result


def _callback_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)}


def _collect(trainer: L.Trainer, attribute: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for callback in trainer.callbacks:
        values.update(getattr(callback, attribute, None) or {})
    return values


class ResultRecorder(Callback):
    """Writes into ``<job_dir>/result.json``, on rank 0 of the process that trains:

    - the instruments' step-0 values (``init``) as soon as they are measured, so a job killed
      later and resumed keeps them (the instruments also carry them in the checkpoint);
    - at the end of training: the final ``metrics`` (Lightning's callback metrics and the
      instruments' final values), ``epochs`` and ``global_step``;
    - after a ``trainer.validate`` of the trained network: its metrics, in place of the fit's.
    - after a ``trainer.test``: the ``test/*`` metrics, beside the fit's.

    ``train()`` reads them back after ``fit``: one path for a single process and for
    ``ddp_spawn``, whose workers hand none of their callback state back to the launcher.
    It must come after the instruments in the callback list, so their values exist.
    """

    def __init__(self, job_dir: str | Path) -> None:
        self.job_dir = Path(job_dir)
        self._init_written = False

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        if trainer.global_step == 0 and not self._init_written and trainer.global_rank == 0:
            self._init_written = True
            init = _collect(trainer, "init_metrics")
            if init:
                update_result(self.job_dir, init=init)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        metrics = _callback_metrics(trainer)
        metrics.update(_collect(trainer, "final_metrics"))
        # A resumed run's instruments restored their step-0 values from the checkpoint;
        # anything they lack (a checkpoint from an older version) stays as result.json has it.
        init = {
            **(read_result(self.job_dir) or {}).get("init", {}),
            **_collect(trainer, "init_metrics"),
        }
        update_result(
            self.job_dir,
            init=init,
            metrics=metrics,
            epochs=trainer.current_epoch,
            global_step=trainer.global_step,
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only a validation after fit (train() re-validates a network pruned after its last
        # validation); the fit's own validations reach result.json through on_train_end.
        if trainer.state.fn != TrainerFn.VALIDATING or trainer.global_rank != 0:
            return
        metrics = (read_result(self.job_dir) or {}).get("metrics", {})
        update_result(self.job_dir, metrics={**metrics, **_callback_metrics(trainer)})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        metrics = (read_result(self.job_dir) or {}).get("metrics", {})
        tested = {k: v for k, v in _callback_metrics(trainer).items() if k.startswith("test/")}
        update_result(self.job_dir, metrics={**metrics, **tested})
