"""Fast paths keep results: cached data, batches left on the device, grouped mini-batches,
backward without Lightning's hook dispatch when no hook listens."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from fcn_research.data import Playground2D
from fcn_research.data import base as data_base
from fcn_research.module import FCNModule, backward_is_plain


def test_same_configuration_is_generated_once(monkeypatch):
    monkeypatch.setattr(data_base, "_DATA_CACHE", {})
    calls = []
    original = Playground2D.generate

    def counting(self):
        calls.append(self.shape)
        return original(self)

    monkeypatch.setattr(Playground2D, "generate", counting)
    first = Playground2D("spiral", num_samples=300, seed=3)
    first.setup("fit")
    second = Playground2D("spiral", num_samples=300, seed=3, batch_size=7)
    second.setup("fit")
    assert calls == ["spiral"]
    assert torch.equal(first.x_train, second.x_train)
    Playground2D("spiral", num_samples=300, seed=4).setup("fit")
    Playground2D("circle", num_samples=300, seed=3).setup("fit")
    assert calls == ["spiral", "spiral", "circle"]


def test_batches_on_the_device_are_passed_through():
    dm = Playground2D("moons", num_samples=50)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert dm.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch


@pytest.mark.parametrize(
    "overrides",
    [
        # the notebook's XOR: 50 repeats of the full batch, all in one Lightning batch
        [
            "data=xor_table",
            "depth=2",
            "width=8",
            "activation=tanh",
            "data.min_batches_per_epoch=50",
        ],
        # mini-batches of moons (13 per epoch) in groups of 4, the last group short
        ["data=moons", "data.num_samples=800", "width=16"],
    ],
)
def test_steps_per_batch_trains_exactly_as_single_batches(make_cfg, tmp_path, overrides):
    from fcn_research.train import train

    common = [*overrides, "max_epochs=3", "lr=0.05"]
    single = train(make_cfg(*common, "steps_per_batch=1", output_dir=tmp_path / "single"))
    grouped = train(make_cfg(*common, "steps_per_batch=4", output_dir=tmp_path / "grouped"))
    assert grouped["global_step"] == single["global_step"] > 3
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "grad_norm/layer_01",
        "neurons/dead_fraction",
    ):
        assert grouped["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-5, abs=1e-7)
    assert grouped["init"] == pytest.approx(single["init"])


def test_grouped_batches_keep_order_and_count():
    dm = Playground2D("moons", num_samples=250, batch_size=32, val_fraction=0.2, test_fraction=0)
    dm.setup("fit")
    singles = list(dm.train_dataloader())
    dm._loaders.clear()
    dm.steps_per_batch = 3
    groups = list(dm.train_dataloader())
    assert len(dm.train_dataloader()) == len(groups) == 3  # 7 mini-batches -> 3 + 3 + 1
    flat = [pair for group in groups for pair in group]
    assert len(flat) == len(singles) == 7
    for (xa, ya), (xb, yb) in zip(flat, singles, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_steps_per_batch_must_be_positive(make_cfg):
    from fcn_research.train import train

    message = r"steps_per_batch \(mini-batches per Lightning batch\) must be >= 1, got 0"
    with pytest.raises(ValueError, match=message):
        train(make_cfg("steps_per_batch=0"))


@pytest.mark.parametrize("interval, expected", [(3600, [3]), (0, [0, 1, 2, 3])])
def test_checkpoint_is_throttled_but_always_written_after_the_last_epoch(
    make_cfg, monkeypatch, interval, expected
):
    from fcn_research.callbacks.checkpoint import LastCheckpoint
    from fcn_research.train import train

    saved_epochs: list[int] = []
    original = LastCheckpoint._save_checkpoint

    def recording(self, trainer, filepath):
        saved_epochs.append(trainer.current_epoch)
        original(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", recording)
    cfg = make_cfg(
        "max_epochs=4",
        "data.num_samples=200",
        f"callbacks.model_checkpoint.min_interval_s={interval}",
    )
    result = train(cfg)
    assert saved_epochs == expected  # 1 h: only after the last epoch; 0: after every epoch
    state = torch.load(f"{cfg.output_dir}/checkpoints/last.ckpt", weights_only=False)
    assert state["epoch"] == 3 and state["global_step"] == result["global_step"]


class _BackwardCounter(L.Callback):
    """A user's callback on backward: it must keep being called every optimizer step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.calls += 1


def _fit(make_cfg, tmp_path, name: str, callbacks: list[L.Callback]) -> tuple[FCNModule, dict]:
    from hydra.utils import instantiate

    from fcn_research.train import build

    cfg = make_cfg("data.num_samples=300", "callbacks=none", output_dir=tmp_path / name)
    L.seed_everything(0, verbose=False)
    datamodule, module = build(cfg)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    trainer.fit(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return module, {**metrics, "global_step": trainer.global_step}


def test_backward_skips_lightning_only_when_nothing_listens(make_cfg, tmp_path):
    plain_module, plain = _fit(make_cfg, tmp_path, "plain", [])
    assert plain_module._plain_backward  # one CPU, 32-bit, no backward hooks

    counter = _BackwardCounter()
    hooked_module, hooked = _fit(make_cfg, tmp_path, "hooked", [counter])
    assert not hooked_module._plain_backward
    assert counter.calls == hooked["global_step"] > 0  # Lightning's path: hook every step
    # Both paths train the same network to the same numbers.
    assert hooked == pytest.approx(plain, rel=1e-6)


def test_backward_keeps_lightning_under_another_precision_or_a_profiler(make_cfg):
    from fcn_research.train import build

    _, module = build(make_cfg("data.num_samples=100"))
    assert not backward_is_plain(L.Trainer(precision="bf16-mixed", logger=False), module)
    assert not backward_is_plain(L.Trainer(profiler="simple", logger=False), module)
    assert backward_is_plain(L.Trainer(logger=False, accelerator="cpu"), module)


def test_a_stack_of_one_backpropagates_the_solo_loss_itself(make_cfg):
    from fcn_research.train import build

    datamodule, module = build(make_cfg("data.num_samples=100", "activation=tanh"))
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    x, y = batch[0] if isinstance(batch, list) else batch  # (1, B, 2), (1, B)
    total, per_member, pred = module._train_losses(x, y)
    solo = torch.nn.functional.binary_cross_entropy_with_logits(
        module.model(x).reshape(-1), y.reshape(-1)
    )
    assert total.dim() == 0 and torch.equal(total.detach(), solo.detach())
    assert per_member.shape == (1,) and pred.shape == (1, y.shape[-1])
    # The loss's own node, not a select from the member axis (one fewer node per step).
    assert type(total.grad_fn).__name__.startswith("BinaryCrossEntropyWithLogits")
