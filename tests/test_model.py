"""MLP semantics: depth counts Linear layers, width per hidden layer, Maxout widens."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from fcn_research.activations import Maxout, ZeroCentredSigmoid
from fcn_research.model import MLP


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_depth_one_is_a_perceptron():
    model = MLP(2, 1, depth=1, width=32, activation=nn.ReLU)
    assert len(linears(model)) == 1
    assert len(model.activations) == 0
    assert (model.linears[0].in_features, model.linears[0].out_features) == (2, 1)
    assert sum(p.numel() for p in model.parameters()) == 2 + 1
    # No hidden layer: the network is affine in its input.
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.allclose(model(x + y), model(x) + model(y) - model(torch.zeros(5, 2)), atol=1e-5)


@pytest.mark.parametrize("depth", [2, 3, 5, 8])
def test_depth_counts_linear_layers(depth):
    model = MLP(3, 4, depth=depth, width=7, activation=nn.Tanh)
    assert len(linears(model)) == depth
    assert len(model.activations) == depth - 1
    assert all(isinstance(a, nn.Tanh) for a in model.activations)
    shapes = [(lin.in_features, lin.out_features) for lin in model.linears]
    assert shapes == [(3, 7)] + [(7, 7)] * (depth - 2) + [(7, 4)]
    assert model(torch.randn(6, 3)).shape == (6, 4)


def test_each_layer_has_its_own_activation_instance():
    model = MLP(2, 1, depth=5, width=4, activation=partial(nn.LeakyReLU, 0.1))
    ids = {id(a) for a in model.activations}
    assert len(ids) == 4
    assert all(a.negative_slope == 0.1 for a in model.activations)


def test_list_width_makes_a_bottleneck():
    model = MLP(2, 3, depth=4, width=[16, 2, 16], activation=nn.ReLU)
    shapes = [(lin.in_features, lin.out_features) for lin in model.linears]
    assert shapes == [(2, 16), (16, 2), (2, 16), (16, 3)]
    with pytest.raises(ValueError, match=r"one entry per hidden layer \(depth - 1 = 3\)"):
        MLP(2, 3, depth=4, width=[16, 2], activation=nn.ReLU)


def test_maxout_widens_the_linear_before_it():
    pool, width = 3, 4
    model = MLP(2, 1, depth=3, width=width, activation=partial(Maxout, pool))
    shapes = [(lin.in_features, lin.out_features) for lin in model.linears]
    assert shapes == [(2, width * pool), (width, width * pool), (width, 1)]
    expected = (2 * 12 + 12) + (4 * 12 + 12) + (4 * 1 + 1)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.randn(5, 2)).shape == (5, 1)


def test_maxout_takes_the_max_of_consecutive_pieces():
    x = torch.tensor([[1.0, 5.0, -2.0, -3.0, 0.5, 0.25]])
    assert torch.equal(Maxout(2)(x), torch.tensor([[5.0, -2.0, 0.5]]))
    assert torch.equal(Maxout(3)(x), torch.tensor([[5.0, 0.5]]))
    with pytest.raises(ValueError, match="pool_size"):
        Maxout(0)


def test_zero_centred_sigmoid():
    x = torch.linspace(-4, 4, 9)
    assert torch.allclose(ZeroCentredSigmoid()(x), torch.sigmoid(x) - 0.5)
    assert ZeroCentredSigmoid()(torch.zeros(1)).item() == 0.0


@pytest.mark.parametrize("depth", [0, -1, True, 2.5])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match=r"depth must be an integer >= 1"):
        MLP(2, 1, depth=depth, width=4, activation=nn.ReLU)


@pytest.mark.parametrize("width", [0, -3, [4, 0]])
def test_bad_width(width):
    with pytest.raises(ValueError, match="width must be >= 1"):
        MLP(2, 1, depth=3, width=width, activation=nn.ReLU)


@pytest.mark.parametrize("width", [8.5, "8", True, [4.0, 4], [True, 4]])
def test_width_must_be_integers(width):
    with pytest.raises(ValueError, match=r"width must be an integer >= 1 or a list of them"):
        MLP(2, 1, depth=3, width=width, activation=nn.ReLU)


def test_activation_must_build_a_module():
    with pytest.raises(TypeError, match="_partial_"):
        MLP(2, 1, depth=2, width=4, activation=lambda: torch.relu)
