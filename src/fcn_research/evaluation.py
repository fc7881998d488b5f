"""The test split, evaluated once after training, on the last or the best validation weights.

The test split never chooses anything: validation picks the best epoch (``test_weights=
best_val``) and is what any search optimises; the test metrics only report.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from fcn_research.data.base import InMemoryDataModule
from fcn_research.module import FCNModule
from fcn_research.private_internals import set_logging_step

BEST_VAL = "best_val"  # the checkpoint's file name (.ckpt) in the job's checkpoints/


def best_val_checkpoint(cfg: DictConfig, module: FCNModule) -> list[ModelCheckpoint]:
    """With ``test_weights=best_val``: a ModelCheckpoint that keeps the best validation
    epoch's weights in ``checkpoints/best_val.ckpt`` (by ``val/acc``, or ``val/mse``);
    otherwise nothing (the last epoch's weights are the ones in memory)."""
    if cfg.get("test_weights", "last") != BEST_VAL:
        return []
    return [
        ModelCheckpoint(
            dirpath=Path(cfg.output_dir) / "checkpoints",
            filename=BEST_VAL,
            monitor=f"val/{module.metric_name}",
            mode="min" if module.metric_name == "mse" else "max",
            save_top_k=1,
            enable_version_counter=False,
        )
    ]


def evaluate_test(
    trainer: L.Trainer,
    module: FCNModule,
    datamodule: InMemoryDataModule,
    cfg: DictConfig,
    global_step: int,
) -> bool:
    """Evaluate the test split with ``trainer.test`` (``test/loss``, ``test/acc`` or
    ``test/mse``, logged at ``global_step``); False when the data has no test split."""
    if not datamodule.has_test:
        return False
    ckpt_path = None
    if cfg.get("test_weights", "last") == BEST_VAL:
        best = Path(cfg.output_dir) / "checkpoints" / f"{BEST_VAL}.ckpt"
        if not best.is_file():
            raise RuntimeError(
                f"test_weights=best_val: no best validation checkpoint at {best} (did any "
                "validation run?); use test_weights=last to test the last epoch's weights"
            )
        ckpt_path = str(best)
    # Lightning logs at its own logging counter, which the module keeps at the optimizer
    # step (under ddp_spawn this process's trainer never counted: the recorded step).
    set_logging_step(trainer, global_step)
    trainer.test(
        module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
    )
    return True
