"""Parameters inside an activation module (LearnableSwish's beta) are logged per layer."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.activations import LearnableSwish
from fcn_research.train import train

SWISH = ["activation=swish_learnable", "depth=3", "width=8", "data.num_samples=200"]


def test_learnable_swish_is_x_sigmoid_beta_x_with_beta_trained():
    act = LearnableSwish(beta=2.0)
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(act(x), x * torch.sigmoid(2.0 * x))
    act(x).sum().backward()
    assert act.beta.grad is not None and act.beta.grad != 0
    assert [name for name, _ in act.named_parameters()] == ["beta"]


def test_beta_per_layer_reaches_tensorboard_and_result_json(make_cfg, tmp_path):
    out = tmp_path / "job"
    result = train(make_cfg(*SWISH, "activation.beta=1.5", output_dir=out))
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    for layer in (1, 2):  # the two hidden layers
        value, grad = (
            f"act_param/beta/layer_{layer:02d}",
            f"act_param_grad_norm/beta/layer_{layer:02d}",
        )
        assert result["init"][value] == 1.5
        assert result["init"][grad] > 0
        trained = state["state_dict"][f"model.activations.{layer - 1}.beta"].item()
        assert trained != pytest.approx(1.5, abs=1e-4)  # it learnt
        assert result["metrics"][value] == pytest.approx(trained, rel=1e-6)
        assert result["metrics"][grad] > 0
        points = events.Scalars(value)
        assert points[0].step == 0 and points[0].value == 1.5
        assert points[-1].step == result["global_step"]
        assert events.Scalars(grad)[0].step == 0
    assert "act_param/beta/layer_03" not in result["metrics"]  # the output layer has none


def test_an_activation_without_parameters_logs_none(make_cfg, tmp_path):
    result = train(make_cfg("data.num_samples=200", output_dir=tmp_path / "job"))
    assert not [k for k in {**result["init"], **result["metrics"]} if k.startswith("act_param")]
