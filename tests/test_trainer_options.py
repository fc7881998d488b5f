"""Lightning Trainer options keep their Lightning meaning: gradient clipping works, gradient
accumulation is refused with its equivalent, and what counts Lightning batches counts steps."""

from __future__ import annotations

import copy
import logging
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from fcn_research.callbacks.checkpoint import LastCheckpoint
from fcn_research.config_checks import ConfigError
from fcn_research.module import FCNModule
from fcn_research.results import read_result
from fcn_research.trainer_options import apply_trainer_options, batch_counters

QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
# moons: 600 training samples (of 1000; 200 validate, 200 test) in 10 mini-batches of 64.
MOONS_BATCHES = 10


class _RecordSteps(L.Callback):
    """A user's callback: appends ``trainer.global_step`` to ``path`` each time its hook runs."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _record(self, trainer: L.Trainer) -> None:
        with self.path.open("a") as f:
            f.write(f"{trainer.global_step}\n")


class BatchEndSteps(_RecordSteps):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record(trainer)


class ValidationSteps(_RecordSteps):
    def on_validation_end(self, trainer, pl_module) -> None:
        self._record(trainer)


def _recorded(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


class _GradNormSeen(L.Callback):
    """What an instrument sees in on_before_optimizer_step: the global gradient norm."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipped_step_equals_the_hand_computed_one(make_cfg, algorithm):
    from fcn_research.train import build

    clip, lr = 0.05, 0.5
    cfg = make_cfg("data.num_samples=200", "optimizer=sgd", f"lr={lr}", "callbacks=none")
    L.seed_everything(0, verbose=False)
    datamodule, module = build(cfg)
    x, y = datamodule.first_train_batch()
    reference = copy.deepcopy(module)
    loss, _ = reference.loss_and_predictions(x, y)
    loss.backward()
    params = list(reference.parameters())
    grads = [p.grad.clone() for p in params]
    norm = float(torch.cat([g.flatten() for g in grads]).norm())
    if algorithm == "norm":
        assert norm > clip  # the test clips for real
        clipped = [g * min(1.0, clip / (norm + 1e-6)) for g in grads]  # torch's clip_grad_norm_
    else:
        assert max(float(g.abs().max()) for g in grads) > clip
        clipped = [g.clamp(-clip, clip) for g in grads]
    expected = [p.detach() - lr * g for p, g in zip(params, clipped, strict=True)]

    seen = _GradNormSeen()
    trainer = L.Trainer(
        max_steps=1,
        gradient_clip_val=clip,
        gradient_clip_algorithm=algorithm,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[seen],
    )
    apply_trainer_options(trainer, module, datamodule)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1
    for got, want in zip(module.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-7)
    # Lightning's order: callbacks see the gradient before it is clipped.
    assert seen.norms == pytest.approx([norm], rel=1e-5)


def test_gradient_clipping_trains_through_the_cli(run_cli, tmp_path):
    # SGD, so the clip changes the steps (Adam would undo a uniform rescaling).
    run_cli(
        "-m",
        "+trainer.gradient_clip_val=1e-6,100",
        "+trainer.limit_train_batches=3",
        "optimizer=sgd",
        "lr=0.5",
        "max_epochs=2",
        "data.num_samples=300",
        "callbacks=none",
        *QUIET,
    )
    jobs = {
        p.parent.name: read_result(p.parent)
        for p in tmp_path.glob("outputs/sweeps/*/*/result.json")
    }
    assert len(jobs) == 2, jobs
    tiny, large = (
        next(r for name, r in jobs.items() if f"gradient_clip_val={v}," in name)
        for v in ("1e-06", "100")
    )
    for result in (tiny, large):
        assert result["status"] == "completed"
        assert result["global_step"] == 6  # limit_train_batches=3 x 2 epochs
    # A clip of 1e-6 keeps the network where it started; 100 never clips.
    assert abs(tiny["metrics"]["val/loss"] - large["metrics"]["val/loss"]) > 1e-2
    log = next(tmp_path.glob("outputs/sweeps/*/*/train.log")).read_text()
    assert "steps_per_batch=8 -> 1" in log and "trainer.limit_train_batches=3" in log


@pytest.mark.parametrize(
    "overrides, use",
    [
        ([], "use batch_size=128 at the same lr"),
        (["data=xor_table"], "use batch_size=8 data.min_batches_per_epoch=50 at the same lr"),
    ],
)
def test_accumulate_grad_batches_is_refused_with_its_equivalent(make_cfg, overrides, use):
    from fcn_research.train import train

    cfg = make_cfg("+trainer.accumulate_grad_batches=2", *overrides)
    with pytest.raises(ConfigError, match=r"trainer.accumulate_grad_batches=2 is not supported"):
        train(cfg)  # a ConfigError: the CLI prints it as one line, without a traceback
    result = read_result(Path(cfg.output_dir))
    assert result["status"] == "failed" and use in result["error"]
    assert "global_step" not in result  # refused before training
    assert not (Path(cfg.output_dir) / "checkpoints").exists()


@pytest.mark.parametrize("limit, steps_per_epoch", [("2", 2), ("0.5", MOONS_BATCHES // 2)])
def test_limit_train_batches_counts_optimizer_steps(make_cfg, caplog, limit, steps_per_epoch):
    from fcn_research.train import train

    caplog.set_level(logging.INFO, logger="fcn_research.trainer_options")
    result = train(make_cfg(f"+trainer.limit_train_batches={limit}", "callbacks=none"))
    assert result["global_step"] == 2 * steps_per_epoch  # max_epochs=2
    assert f"these count Lightning batches: trainer.limit_train_batches={limit}" in caplog.text


def test_val_check_interval_counts_optimizer_steps(make_cfg, tmp_path):
    from fcn_research.train import train

    path = tmp_path / "val_steps.txt"
    result = train(
        make_cfg(
            "+trainer.val_check_interval=3",
            "callbacks=none",
            f"+callbacks.val_steps._target_={__name__}.ValidationSteps",
            f"+callbacks.val_steps.path='{path}'",
        )
    )
    assert result["global_step"] == 2 * MOONS_BATCHES
    # Every 3 mini-batches of each 10-batch epoch (Lightning restarts the count per epoch).
    assert _recorded(path) == [3, 6, 9, 13, 16, 19]


def test_a_users_batch_hook_runs_once_per_optimizer_step(make_cfg, tmp_path):
    from fcn_research.train import train

    path = tmp_path / "batch_steps.txt"
    result = train(
        make_cfg(
            f"+callbacks.batch_end._target_={__name__}.BatchEndSteps",
            f"+callbacks.batch_end.path='{path}'",
        )
    )
    assert _recorded(path) == list(range(1, 2 * MOONS_BATCHES + 1))
    assert result["global_step"] == 2 * MOONS_BATCHES


class _BatchHookModule(FCNModule):
    def on_train_batch_start(self, batch, batch_idx) -> None:
        pass


def test_only_what_counts_batches_makes_a_batch_one_step(make_cfg):
    from hydra.utils import instantiate

    from fcn_research.fit import _instantiate_all
    from fcn_research.train import build

    cfg = make_cfg("data.num_samples=100")
    _, module = build(cfg)

    def counters(*callbacks: L.Callback, target: L.LightningModule = module, **options) -> list:
        trainer = instantiate(cfg.trainer, callbacks=list(callbacks), logger=False, **options)
        return batch_counters(trainer, target)

    defaults = _instantiate_all(cfg.callbacks)  # the instruments and LastCheckpoint
    assert any(isinstance(cb, LastCheckpoint) for cb in defaults)
    # Progress bar, Timer, a checkpoint every n seconds, a duration as val_check_interval:
    # none counts Lightning batches, so the default grouping stays.
    assert not counters(*defaults, enable_progress_bar=True, max_time="00:00:05:00")
    assert not counters(ModelCheckpoint(train_time_interval=timedelta(seconds=5)))
    assert not counters(val_check_interval="00:00:01:00")
    assert counters(ModelCheckpoint(every_n_train_steps=5)) == ["ModelCheckpoint.on_train_batch_*"]
    assert counters(
        target=_BatchHookModule(module.model, "binary", 2, module.optimizer_factories)
    ) == ["_BatchHookModule.on_train_batch_start"]
    assert counters(fast_dev_run=3) == ["trainer.fast_dev_run=3"]
    assert counters(limit_train_batches=1) == ["trainer.limit_train_batches=1"]  # int: 1 batch
    assert counters(val_check_interval=0.5) == ["trainer.val_check_interval=0.5"]


# Clipping and the one-step-per-batch fallback across the feature matrix.
MATRIX = ["+trainer.gradient_clip_val=0.05", "+trainer.limit_train_batches=3", "optimizer=sgd"]


def test_clipped_limited_run_resumes_to_the_uninterrupted_result(make_cfg, tmp_path):
    from fcn_research.results import write_json_atomic
    from fcn_research.train import train

    # With every instrument: their step-0 values and finals must match too.
    common = [*MATRIX, "lr=0.5", "callbacks.model_checkpoint.min_interval_s=0"]
    reference = train(make_cfg(*common, "max_epochs=6", output_dir=tmp_path / "reference"))
    train(make_cfg(*common, "max_epochs=3", output_dir=tmp_path / "job"))
    interrupted = read_result(tmp_path / "job")
    write_json_atomic(tmp_path / "job" / "result.json", {**interrupted, "status": "running"})
    resumed = train(make_cfg(*common, "max_epochs=6", output_dir=tmp_path / "job"))
    assert resumed["global_step"] == reference["global_step"] == 18
    assert resumed["metrics"] == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-6)
    assert "grad_norm/layer_01" in resumed["metrics"]
    assert resumed["init"] == pytest.approx(reference["init"], rel=1e-6)


@pytest.mark.slow
def test_clipped_limited_run_under_ddp_spawn(run_cli, tmp_path):
    ddp = ["trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2"]
    run_cli(*ddp, *MATRIX, *QUIET, "max_epochs=2")
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    result = read_result(run)
    assert result["status"] == "completed"
    # The ranks train in spawned processes; rank 0 recorded the step count and instruments.
    assert result["global_step"] == 6 and "grad_norm/layer_01" in result["init"]
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 6
    assert "steps_per_batch=8 -> 1" in (run / "train.log").read_text()
