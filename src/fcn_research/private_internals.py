"""Every use of a private Lightning or Hydra internal, each in one small function that says why
the public API does not do it. Tested on lightning 2.6 and hydra-core 1.3 (the versions
``pyproject.toml`` allows); docs/lightning.md lists them. No other module touches them (a
test checks), so an upgrade that moves one breaks here and nowhere else."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from lightning.pytorch.callbacks import ModelCheckpoint


def set_logging_step(trainer: L.Trainer, step: int) -> None:
    """Make ``step`` the step at which Lightning logs what ``self.log`` records next.

    Lightning logs at its count of Lightning batches that stepped, which has no public
    setter: a module that takes several optimizer steps per Lightning batch, or a trainer
    that validates or tests after fit (under ddp_spawn, one whose loop never counted), sets
    it to ``trainer.global_step`` (or the recorded step) so every tag of a run shares one axis.
    """
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def checkpoint_dict(trainer: L.Trainer, weights_only: bool = False) -> dict[str, Any]:
    """The checkpoint dict ``trainer.save_checkpoint`` would write, without writing it.

    The public API only writes a file; a stack splits the dict into one file per member.
    """
    return trainer._checkpoint_connector.dump_checkpoint(weights_only)


def every_n_train_steps(callback: ModelCheckpoint) -> int:
    """A ``ModelCheckpoint``'s ``every_n_train_steps`` (0: not by steps), which it keeps only
    in a private attribute."""
    return callback._every_n_train_steps


class ModelCheckpointHooks(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose save decision and write are public-named hooks.

    ``ModelCheckpoint`` decides and writes in private methods, and has no option for "at most
    every N seconds, but always after the last epoch" nor for writing a file per member:
    ``skips_save`` adds reasons not to save, ``write_checkpoint`` writes (by default as
    Lightning does), and one that writes its own files calls ``record_saved`` after.
    """

    def skips_save(self, trainer: L.Trainer) -> bool:
        """A reason of the subclass's not to save now (Lightning's own are checked first)."""
        return False

    def write_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Write the checkpoint (Lightning's ``trainer.save_checkpoint`` to ``filepath``)."""
        super()._save_checkpoint(trainer, filepath)

    def record_saved(self, trainer: L.Trainer, filepath: str) -> None:
        """Note a checkpoint written by the subclass itself, as Lightning's own write does
        (so it is not written twice at one step, and ``last_model_path``-style reads work)."""
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _should_skip_saving_checkpoint(self, trainer: L.Trainer) -> bool:
        return super()._should_skip_saving_checkpoint(trainer) or self.skips_save(trainer)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self.write_checkpoint(trainer, filepath)


def split_sweep_arguments(overrides: list[Any]) -> list[list[list[str]]]:
    """Hydra's sweep overrides expanded to the batches of jobs its basic sweeper runs.

    Hydra exposes the expansion only inside its internal BasicSweeper; a sweeper of ours
    parses a grid exactly as Hydra's default one does.
    """
    return BasicSweeper.split_arguments(overrides, None)
