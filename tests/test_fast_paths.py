"""Fast paths keep results: cached data, batches left on the device, steps per full batch."""

from __future__ import annotations

import pytest
import torch

from fcn_research.data import Playground2D
from fcn_research.data import base as data_base


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


def test_steps_per_batch_equals_repeating_the_full_batch(make_cfg, tmp_path):
    from fcn_research.train import train

    common = ["data=xor_table", "depth=2", "width=8", "activation=tanh", "max_epochs=3", "lr=0.05"]
    repeated = train(
        make_cfg(*common, "data.min_batches_per_epoch=50", output_dir=tmp_path / "repeated")
    )
    stepped = train(
        make_cfg(
            *common,
            "data.min_batches_per_epoch=1",
            "steps_per_batch=50",
            output_dir=tmp_path / "stepped",
        )
    )
    assert repeated["global_step"] == stepped["global_step"] == 150
    for key in ("train/loss", "val/loss", "grad_norm/layer_01", "neurons/dead_fraction"):
        assert stepped["metrics"][key] == pytest.approx(
            repeated["metrics"][key], rel=1e-5, abs=1e-7
        )
    assert stepped["init"] == pytest.approx(repeated["init"])


def test_steps_per_batch_needs_full_batches(make_cfg):
    from fcn_research.train import train

    with pytest.raises(
        ValueError, match=r"steps_per_batch=4 needs full-batch training .*batch_size=64"
    ):
        train(make_cfg("steps_per_batch=4"))


def test_checkpoint_is_throttled_but_always_written_after_the_last_epoch(make_cfg, monkeypatch):
    from fcn_research.callbacks.checkpoint import LastCheckpoint
    from fcn_research.train import train

    saved_epochs: list[int] = []
    original = LastCheckpoint._save_checkpoint

    def recording(self, trainer, filepath):
        saved_epochs.append(trainer.current_epoch)
        original(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", recording)
    cfg = make_cfg(
        "max_epochs=4", "data.num_samples=200", "callbacks.model_checkpoint.min_interval_s=3600"
    )
    result = train(cfg)
    assert saved_epochs == [0, 3]  # the first epoch, then the last one; none in between
    state = torch.load(f"{cfg.output_dir}/checkpoints/last.ckpt", weights_only=False)
    assert state["epoch"] == 3 and state["global_step"] == result["global_step"]
