"""Later jobs of a sweep reuse generated data; batches already on the device are not moved."""

from __future__ import annotations

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
