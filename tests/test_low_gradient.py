"""``neurons/low_gradient_fraction``: units passing almost no gradient, on one absolute scale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcn_research.callbacks import NeuronMonitor
from fcn_research.callbacks.neurons import neuron_stats
from fcn_research.model import MLP


def one_layer(activation: type[nn.Module], biases: list[float]) -> MLP:
    """depth=2, one hidden unit per bias, every pre-activation constant (weights 0)."""
    model = MLP(1, 1, depth=2, width=len(biases), activation=activation)
    with torch.no_grad():
        model.linears[0].weight.zero_()
        model.linears[0].bias.copy_(torch.tensor(biases))
    return model


def test_low_gradient_is_absolute_where_saturated_is_relative():
    x = torch.randn(64, 1)
    # sigmoid'(z): 0.25 at 0, 0.045 at 3 (< 0.05, yet 18 % of the peak), 4.5e-5 at 10.
    stats = neuron_stats(one_layer(nn.Sigmoid, [0.0, 3.0, 3.0, 10.0]), x)
    assert stats["neurons/low_gradient_fraction/layer_01"].item() == 0.75
    assert stats["neurons/low_gradient_fraction"].item() == 0.75
    assert stats["neurons/saturated_fraction/layer_01"].item() == 0.25  # only z = 10
    assert stats["neurons/dead_fraction"].item() == 0.0  # smooth: 4.5e-5 > 1e-8
    # tanh'(z): 1 at 0, 0.79 at 0.5, 0.0099 at 3: the same threshold for every activation.
    stats = neuron_stats(one_layer(nn.Tanh, [0.0, 0.5, 3.0, 3.0]), x)
    assert stats["neurons/low_gradient_fraction"].item() == 0.5
    assert stats["neurons/dead_fraction"].item() == 0.0


def test_low_gradient_averages_over_probe_samples():
    # A ReLU unit active on about half of the samples passes gradient 0.5 on average: not low;
    # one active on 1 sample of 1000 passes 0.001: low, yet not dead.
    model = MLP(1, 1, depth=2, width=2, activation=nn.ReLU)
    x = torch.arange(1000.0).unsqueeze(1)
    with torch.no_grad():
        model.linears[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        model.linears[0].bias.copy_(torch.tensor([-500.0, -998.5]))
    stats = neuron_stats(model, x)
    assert stats["neurons/low_gradient_fraction"].item() == 0.5
    assert stats["neurons/dead_fraction"].item() == 0.0
    assert stats["neurons/saturated_fraction/layer_01"].item() == pytest.approx((501 + 999) / 2000)
    assert stats["neurons/saturated_fraction"].item() == pytest.approx((501 + 999) / 2000)


def test_whole_network_saturated_fraction_counts_every_pair():
    torch.manual_seed(0)
    model = MLP(3, 1, depth=3, width=5, activation=nn.Tanh)
    x = torch.randn(40, 3)
    stats = neuron_stats(model, x)
    per_layer = [stats[f"neurons/saturated_fraction/layer_{i:02d}"].item() for i in (1, 2)]
    assert stats["neurons/saturated_fraction"].item() == pytest.approx(sum(per_layer) / 2)


def test_threshold_is_validated():
    with pytest.raises(ValueError, match=r"low_gradient_threshold must be > 0.*got -0\.1"):
        NeuronMonitor(low_gradient_threshold=-0.1)
