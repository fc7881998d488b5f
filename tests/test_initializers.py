"""Initialization schemes: the standard deviations of the papers, zero biases, one-layer schemes."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from fcn_research import initializers as init
from fcn_research.model import MLP

WIDE = 512  # a 512 x 512 layer: 262k weights, so sample stds are within ~0.3% of the truth


class MyReLU(nn.ReLU):
    """A ReLU that torch's calculate_gain does not know by type: exercises the estimate."""


class Rectifier(nn.Module):
    """max(0, x), written from scratch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)


def wide_mlp(activation=nn.ReLU, depth: int = 3) -> MLP:
    torch.manual_seed(0)
    return MLP(WIDE, WIDE, depth=depth, width=WIDE, activation=activation)


def hidden_std(model: MLP) -> float:
    """Std of Linear 2's weights: fan_in = fan_out = WIDE."""
    return model.linears[1].weight.std().item()


@pytest.mark.parametrize("scheme", [init.XavierUniform, init.XavierNormal])
def test_xavier_gain_one(scheme):
    model = scheme()(wide_mlp(nn.Tanh))
    assert hidden_std(model) == pytest.approx(math.sqrt(2 / (WIDE + WIDE)), rel=0.02)


@pytest.mark.parametrize("scheme", [init.XavierUniform, init.XavierNormal])
def test_xavier_gain_auto_takes_the_activation_gain(scheme):
    model = scheme(gain="auto")(wide_mlp(nn.Tanh))
    assert hidden_std(model) == pytest.approx(5 / 3 * math.sqrt(2 / (WIDE + WIDE)), rel=0.02)
    model = scheme(gain=2.0)(wide_mlp(nn.Tanh))
    assert hidden_std(model) == pytest.approx(2 * math.sqrt(2 / (WIDE + WIDE)), rel=0.02)


def test_xavier_rejects_unknown_gain_word():
    with pytest.raises(ValueError, match="'auto'"):
        init.XavierNormal(gain="big")(wide_mlp(nn.Tanh, depth=2))


@pytest.mark.parametrize("scheme", [init.KaimingUniform, init.KaimingNormal])
def test_kaiming_relu(scheme):
    model = scheme()(wide_mlp(nn.ReLU))
    assert hidden_std(model) == pytest.approx(math.sqrt(2 / WIDE), rel=0.02)


@pytest.mark.parametrize("scheme", [init.KaimingUniform, init.KaimingNormal])
def test_kaiming_leaky_relu_uses_its_slope(scheme):
    model = scheme()(wide_mlp(partial(nn.LeakyReLU, 0.3)))
    expected = math.sqrt(2 / (1 + 0.3**2)) / math.sqrt(WIDE)
    assert hidden_std(model) == pytest.approx(expected, rel=0.02)


def test_kaiming_tanh_uses_torch_gain():
    model = init.KaimingNormal()(wide_mlp(nn.Tanh))
    assert hidden_std(model) == pytest.approx(5 / 3 / math.sqrt(WIDE), rel=0.02)


@pytest.mark.parametrize("activation", [MyReLU, Rectifier])
def test_unknown_activation_gain_is_estimated(activation):
    # Not in torch's table (MyReLU is a subclass, looked up by exact type): Monte Carlo.
    assert type(activation()) not in init._TORCH_GAIN_NAMES
    assert init.activation_gain(activation()) == pytest.approx(math.sqrt(2), rel=0.01)
    model = init.KaimingNormal()(wide_mlp(activation))
    assert hidden_std(model) == pytest.approx(math.sqrt(2 / WIDE), rel=0.02)


def test_gelu_gain_is_estimated_and_used():
    gain = init.activation_gain(nn.GELU())
    # E[gelu(z)^2] ~ 0.43 for z ~ N(0, 1), a bit under ReLU's 1/2: a gain a bit over sqrt(2).
    assert math.sqrt(2) < gain < 2.0
    assert gain == init.activation_gain(nn.GELU()), "the estimate must be reproducible"
    model = init.KaimingNormal()(wide_mlp(nn.GELU))
    assert hidden_std(model) == pytest.approx(gain / math.sqrt(WIDE), rel=0.02)


def test_known_gains():
    assert init.activation_gain(nn.Identity()) == 1.0
    assert init.activation_gain(None) == 1.0
    assert init.activation_gain(nn.Tanh()) == pytest.approx(5 / 3)
    assert init.activation_gain(nn.ReLU()) == pytest.approx(math.sqrt(2))
    assert init.activation_gain(nn.SELU()) == pytest.approx(3 / 4)


def test_lecun_normal():
    model = init.LecunNormal()(wide_mlp(nn.SELU))
    assert hidden_std(model) == pytest.approx(1 / math.sqrt(WIDE), rel=0.02)
    assert model.linears[1].weight.mean().item() == pytest.approx(0, abs=0.003)


def test_orthogonal():
    torch.manual_seed(0)
    model = init.Orthogonal(gain=2.0)(MLP(64, 1, depth=2, width=64, activation=nn.Tanh))
    w = model.linears[0].weight
    assert torch.allclose(w @ w.T, 4 * torch.eye(64), atol=1e-4)


@pytest.mark.parametrize(
    "scheme",
    [
        init.XavierUniform(),
        init.XavierNormal(),
        init.KaimingUniform(),
        init.KaimingNormal(),
        init.LecunNormal(),
        init.Orthogonal(),
        init.Zeros(),
    ],
    ids=lambda s: type(s).__name__,
)
def test_named_schemes_zero_every_bias(scheme):
    torch.manual_seed(0)
    model = scheme(MLP(3, 2, depth=4, width=8, activation=nn.ReLU))
    for linear in model.linears:
        assert torch.count_nonzero(linear.bias) == 0
    if isinstance(scheme, init.Zeros):
        assert all(torch.count_nonzero(lin.weight) == 0 for lin in model.linears)


def small_mlp(depth: int = 3) -> MLP:
    torch.manual_seed(0)
    return MLP(3, 2, depth=depth, width=8, activation=nn.ReLU)


def state(model: MLP) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_default_keeps_pytorch_init():
    before = state(small_mlp())
    after = init.Default()(small_mlp()).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(torch.count_nonzero(lin.bias) > 0 for lin in small_mlp().linears)


def test_constant_layer_sets_only_its_target():
    before = state(small_mlp())
    model = init.ConstantLayer(target_layer=2, value=0.5)(small_mlp())
    assert torch.all(model.linears[1].weight == 0.5)
    assert torch.equal(model.linears[1].bias, before["linears.1.bias"])
    for i in (0, 2):
        assert torch.equal(model.linears[i].weight, before[f"linears.{i}.weight"])
        assert torch.equal(model.linears[i].bias, before[f"linears.{i}.bias"])


def test_constant_layer_with_a_base_scheme():
    model = init.ConstantLayer(target_layer=3, value=-1.0, base=init.Zeros())(small_mlp())
    assert torch.all(model.linears[2].weight == -1.0)
    assert all(torch.count_nonzero(model.linears[i].weight) == 0 for i in (0, 1))


@pytest.mark.parametrize("fix_bias", [True, False])
def test_negative_layer(fix_bias):
    before = state(small_mlp())
    model = init.NegativeLayer(target_layer=2, fix_bias=fix_bias)(small_mlp())
    target = model.linears[1]
    assert torch.all(target.weight <= 0)
    assert torch.equal(target.weight, -before["linears.1.weight"].abs())
    if fix_bias:
        assert torch.all(target.bias <= 0)
    else:
        assert torch.equal(target.bias, before["linears.1.bias"])
    for i in (0, 2):  # the other layers keep PyTorch's init, signs mixed
        assert torch.equal(model.linears[i].weight, before[f"linears.{i}.weight"])
        assert (model.linears[i].weight > 0).any() and (model.linears[i].weight < 0).any()


def test_negative_layer_behind_relu_is_dead_for_every_input():
    model = init.NegativeLayer(target_layer=2)(small_mlp())
    h1 = torch.relu(model.linears[0](torch.randn(1000, 3)))
    assert torch.all(model.linears[1](h1) <= 0)


@pytest.mark.parametrize("target_layer", [0, 4, -1])
@pytest.mark.parametrize(
    "scheme", [partial(init.ConstantLayer, value=1.0), init.NegativeLayer], ids=["const", "neg"]
)
def test_target_layer_out_of_range(scheme, target_layer):
    with pytest.raises(ValueError) as err:
        scheme(target_layer=target_layer)(small_mlp(depth=3))
    message = str(err.value)
    assert f"target_layer={target_layer}" in message
    assert "1..3" in message
