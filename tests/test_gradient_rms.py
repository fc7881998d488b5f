"""``grad_rms/...``: the per-element RMS of each Linear's weight gradient, a shape-fair
vanishing measure beside ``grad_norm/...``."""

from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.train import train


def test_grad_rms_is_the_norm_per_weight_and_its_ratios(make_cfg, tmp_path):
    # moons: 2 features, width 32, 2 classes as one logit: Linear 1 is 32x2, Linear 4 1x32.
    cfg = make_cfg("depth=4", "width=32", "data.num_samples=200", "max_epochs=1")
    result = train(cfg)
    init = result["init"]
    shapes = {1: 32 * 2, 2: 32 * 32, 3: 32 * 32, 4: 1 * 32}
    rms = {i: init[f"grad_rms/layer_{i:02d}"] for i in shapes}
    for i, numel in shapes.items():
        assert rms[i] == pytest.approx(init[f"grad_norm/layer_{i:02d}"] / math.sqrt(numel))
    assert init["grad_rms/ratio_first_last"] == pytest.approx(rms[1] / rms[4])
    assert init["grad_rms/ratio_hidden"] == pytest.approx(rms[2] / rms[3])
    assert result["metrics"]["grad_rms/ratio_hidden"] > 0
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    assert acc.Scalars("grad_rms/ratio_hidden")[0].step == 0


def test_grad_rms_ratio_hidden_needs_two_hidden_to_hidden_layers(make_cfg):
    cfg = make_cfg("depth=3", "data.num_samples=200", "max_epochs=1")
    init = train(cfg)["init"]
    assert "grad_rms/layer_03" in init and "grad_rms/ratio_hidden" not in init
