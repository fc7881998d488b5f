"""Lightning Trainer options keep their Lightning meaning under the module's manual optimization.

The module writes its optimization out (Lightning's manual mode) and takes ``steps_per_batch``
optimizer steps per Lightning batch. Lightning refuses gradient clipping and accumulation in
manual mode, and anything that counts Lightning batches would count groups of steps. Before
fit, ``apply_trainer_options`` moves clipping into the module, refuses accumulation with its
equivalent, and gives a run whose Trainer counts batches one mini-batch per Lightning batch.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, Timer
from lightning.pytorch.utilities.model_helpers import is_overridden

from fcn_research.config_checks import ConfigError
from fcn_research.data.base import InMemoryDataModule
from fcn_research.module import FCNModule
from fcn_research.private_internals import every_n_train_steps

log = logging.getLogger(__name__)

_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end")


def apply_trainer_options(
    trainer: L.Trainer, module: FCNModule, datamodule: InMemoryDataModule
) -> None:
    """Make ``trainer``'s options mean what Lightning documents for this run; call before fit."""
    refuse_gradient_accumulation(trainer, datamodule)
    move_gradient_clipping(trainer, module)
    datamodule.steps_per_batch = steps_per_batch_for(trainer, module, datamodule.steps_per_batch)


def refuse_gradient_accumulation(trainer: L.Trainer, datamodule: InMemoryDataModule) -> None:
    """Refuse ``accumulate_grad_batches`` != 1 (``ConfigError``: one line for the user), naming
    the batch size that trains the same."""
    k = trainer.accumulate_grad_batches
    if k == 1:
        return
    if not isinstance(k, int) or k < 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches must be a positive integer (1: none), got {k!r}"
        )
    # The loss is a batch mean, an MLP has no batch statistics, and batches are contiguous
    # slices of one permutation per pass: k accumulated batches of b are one batch of k*b.
    batch = datamodule.batch_size
    use = f"batch_size={k * batch}"
    repeats = datamodule.min_batches_per_epoch
    if repeats > 1:  # the epoch counts mini-batches: k times fewer of them
        use += f" data.min_batches_per_epoch={-(-repeats // k)}"
    raise ConfigError(
        f"trainer.accumulate_grad_batches={k} is not supported (training uses Lightning's "
        f"manual optimization); {k} accumulated batches of {batch} are one batch of "
        f"{k * batch} in the same data order: use {use} at the same lr (only steps at the "
        "end of a pass over the data can differ)"
    )


def move_gradient_clipping(trainer: L.Trainer, module: FCNModule) -> None:
    """Hand ``gradient_clip_val`` / ``gradient_clip_algorithm`` from the Trainer to the module.

    ``Trainer()`` has validated them; ``fit()`` would refuse them under manual optimization.
    The module clips as Lightning does: before every optimizer step, after the callbacks'
    ``on_before_optimizer_step`` (which see the gradient unclipped), by norm unless told.
    """
    module.gradient_clip_val = trainer.gradient_clip_val
    module.gradient_clip_algorithm = trainer.gradient_clip_algorithm
    trainer.gradient_clip_val = None
    trainer.gradient_clip_algorithm = None


def steps_per_batch_for(trainer: L.Trainer, module: L.LightningModule, steps_per_batch: int) -> int:
    """``steps_per_batch``, or 1 where something counts Lightning batches (logged with why).

    Grouping changes what a Lightning batch is; with one mini-batch per batch,
    ``limit_train_batches=2`` is 2 optimizer steps, ``val_check_interval=5`` is every 5, and
    a ``on_train_batch_end`` hook runs once per step, as Lightning documents them.
    """
    if steps_per_batch == 1:
        return 1
    reasons = batch_counters(trainer, module)
    if not reasons:
        return steps_per_batch
    log.info(
        "steps_per_batch=%d -> 1 for this run (one optimizer step per Lightning batch), "
        "since these count Lightning batches: %s",
        steps_per_batch,
        ", ".join(reasons),
    )
    return 1


def batch_counters(trainer: L.Trainer, module: L.LightningModule) -> list[str]:
    """What in this run counts Lightning batches: Trainer options, callback and module hooks."""
    found = []
    limit = trainer.limit_train_batches
    if not (isinstance(limit, float) and limit == 1.0):  # an int 1 is one batch
        # fast_dev_run and overfit_batches set limit_train_batches: name what the user set.
        option = next(
            (o for o in ("fast_dev_run", "overfit_batches") if getattr(trainer, o)),
            "limit_train_batches",
        )
        found.append(f"trainer.{option}={getattr(trainer, option)}")
    # Absent when the interval is a duration: that counts seconds, not batches.
    interval = getattr(trainer, "val_check_interval", 1.0)
    if not (isinstance(interval, float) and interval == 1.0):
        found.append(f"trainer.val_check_interval={interval}")
    found += [f"{type(cb).__name__}.on_train_batch_*" for cb in trainer.callbacks if _counts(cb)]
    found += [
        f"{type(module).__name__}.{hook}"
        for hook in _BATCH_HOOKS
        if is_overridden(hook, module, L.LightningModule)
    ]
    return found


def _counts(callback: L.Callback) -> bool:
    """Whether ``callback``'s batch hooks would see a group of steps as one."""
    if isinstance(callback, ProgressBar | Timer):
        # A progress bar only shows the batch count; Timer compares the clock with max_time.
        return False
    if isinstance(callback, ModelCheckpoint) and not any(
        is_overridden(h, callback, ModelCheckpoint) for h in _BATCH_HOOKS
    ):
        # Its batch hook saves when global_step % every_n_train_steps == 0, which a group
        # would test only every steps_per_batch steps; the time and epoch triggers don't count.
        return every_n_train_steps(callback) > 0
    return any(is_overridden(h, callback, L.Callback) for h in _BATCH_HOOKS)
