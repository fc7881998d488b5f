"""Host synchronisations inside training steps, counted (the GPU check's instrument)."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from fcn_research.callbacks.schedule import StepInstrument
from fcn_research.results import write_json_atomic

# The warning of torch.cuda.set_sync_debug_mode("warn") (c10/cuda/CUDAFunctions.cpp).
SYNC_WARNING = "called a synchronizing CUDA operation"


class HostSyncCounter(Callback):
    """Counts host synchronisations inside training steps (``torch.cuda.set_sync_debug_mode
    ("warn")`` while a step runs, on CUDA), split by whether an instrument logs at that
    step (``StepInstrument.schedule``); writes the counts as JSON to ``path`` when the fit ends.

    It wraps the module's ``training_step`` rather than using batch hooks: those would make
    the run take one optimizer step per Lightning batch (``fcn_research.trainer_options``).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.outside: list[int] = []  # global steps of the synchronisations outside logging
        self.at_logging = 0

    def _record(self, trainer: L.Trainer, schedules: list[Any]) -> Callable:
        shown = warnings.showwarning  # anything else is shown as it would be

        def record(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if SYNC_WARNING not in str(message):
                shown(message, category, *args, **kwargs)
            elif any(schedule(trainer.global_step) for schedule in schedules):
                self.at_logging += 1
            else:
                self.outside.append(trainer.global_step)

        return record

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedules = [cb.schedule for cb in trainer.callbacks if isinstance(cb, StepInstrument)]
        record = self._record(trainer, schedules)
        step_fn = pl_module.training_step
        cuda = pl_module.device.type == "cuda"

        @functools.wraps(step_fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("always", message=re.escape(SYNC_WARNING))
                warnings.showwarning = record
                if cuda:
                    torch.cuda.set_sync_debug_mode("warn")
                try:
                    return step_fn(*args, **kwargs)
                finally:
                    if cuda:
                        torch.cuda.set_sync_debug_mode("default")

        pl_module.training_step = counted

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        del pl_module.training_step  # the class's own again
        write_json_atomic(
            self.path,
            {
                "outside_logging": len(self.outside),
                "at_logging": self.at_logging,
                "steps_outside": sorted(set(self.outside))[:20],
            },
        )
