"""Initialization schemes: the standard deviations of the papers, zero biases, one-layer schemes."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from fcn_research import initializers as init
from fcn_research.activations import Maxout, ZeroCentredSigmoid
from fcn_research.model import MLP
from fcn_research.run_dirs import CONF_DIR

WIDE = 512  # a 512 x 512 layer: 262k weights, so sample stds are within ~0.3% of the truth

# E[f(z)^2] for z ~ N(0, 1) by numerical quadrature (scipy.integrate.quad, to 1e-10), so the
# gain 1 / sqrt(E[f(z)^2]) the code computes or estimates can be checked against it.
TANH_SECOND_MOMENT = 0.39429449039784115
SECOND_MOMENTS = {
    "tanh": (nn.Tanh, TANH_SECOND_MOMENT),
    "sigmoid": (nn.Sigmoid, 0.293379035858093),
    "zero_centred_sigmoid": (ZeroCentredSigmoid, 0.043379035858092954),
    "silu": (nn.SiLU, 0.3557755198173523),
    "softplus": (nn.Softplus, 0.9212459088593004),
    "gelu": (nn.GELU, 0.4252214825702986),
    "elu": (nn.ELU, 0.6449454174929239),
}
TANH_GAIN = 1 / math.sqrt(TANH_SECOND_MOMENT)  # 1.5925


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
    assert hidden_std(model) == pytest.approx(TANH_GAIN * math.sqrt(2 / (WIDE + WIDE)), rel=0.02)
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


def test_kaiming_tanh_keeps_the_second_moment():
    # He's criterion, not torch's calculate_gain("tanh") = 5/3.
    model = init.KaimingNormal()(wide_mlp(nn.Tanh))
    assert hidden_std(model) == pytest.approx(TANH_GAIN / math.sqrt(WIDE), rel=0.02)


@pytest.mark.parametrize("activation", [MyReLU, Rectifier])
def test_unknown_activation_gain_is_estimated(activation):
    # No closed form by exact type (MyReLU is a subclass, whose forward could differ): Monte Carlo.
    assert init._exact_second_moment(activation()) is None
    assert init.activation_gain(activation()) == pytest.approx(math.sqrt(2), rel=0.01)
    model = init.KaimingNormal()(wide_mlp(activation))
    assert hidden_std(model) == pytest.approx(math.sqrt(2 / WIDE), rel=0.02)


def test_estimated_gain_is_reproducible_and_used():
    gain = init.activation_gain(nn.SiLU())
    assert gain == init.activation_gain(nn.SiLU()), "the estimate must be reproducible"
    model = init.KaimingNormal()(wide_mlp(nn.SiLU))
    assert hidden_std(model) == pytest.approx(gain / math.sqrt(WIDE), rel=0.02)


def test_exact_gains():
    assert init.activation_gain(None) == 1.0
    assert init.activation_gain(nn.Identity()) == 1.0
    assert init.activation_gain(nn.ReLU()) == pytest.approx(math.sqrt(2), rel=1e-12)
    assert init.activation_gain(nn.LeakyReLU(0.3)) == pytest.approx(math.sqrt(2 / 1.09), rel=1e-12)
    assert init.activation_gain(nn.SELU()) == 1.0
    assert init.activation_gain(Maxout(2)) == 1.0
    assert init.activation_gain(nn.ELU()) == pytest.approx(1 / math.sqrt(0.6449454174929239))
    assert init.activation_gain(nn.GELU()) == pytest.approx(1 / math.sqrt(0.4252214825702986))


@pytest.mark.parametrize("name", sorted(SECOND_MOMENTS))
def test_gain_is_one_over_the_root_second_moment(name):
    activation, second_moment = SECOND_MOMENTS[name]
    # The Monte-Carlo estimates are within ~0.1% of the quadrature; tanh ~1.59, sigmoid ~1.85.
    assert init.activation_gain(activation()) == pytest.approx(second_moment**-0.5, rel=3e-3)


def pre_activation_second_moments(activation, depth: int = 6, width: int = 1024) -> list[float]:
    """Mean over two kaiming_normal MLPs of each hidden pre-activation's second moment.

    The input is N(0, I) at the first activation, i.e. pre-activations of second moment 1;
    each Linear after it should keep that moment.
    """
    totals = [0.0] * (depth - 1)
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = MLP(width, width, depth=depth, width=width, activation=activation)
        init.KaimingNormal()(model)
        z = torch.randn(256, model.linears[0].out_features)
        with torch.no_grad():
            for i, (act, linear) in enumerate(
                zip(model.activations, model.linears[1:], strict=True)
            ):
                z = linear(act(z))
                totals[i] += z.pow(2).mean().item() / 2
    return totals


@pytest.mark.parametrize(
    "conf", sorted((CONF_DIR / "activation").glob("*.yaml")), ids=lambda path: path.stem
)
def test_kaiming_keeps_the_pre_activations_second_moment(conf):
    moments = pre_activation_second_moments(instantiate(OmegaConf.load(conf)))
    # Measured: within 0.07 of 1 (finite width moves the activations with a non-zero mean,
    # ReLU, sigmoid, most). torch's gains put sigmoid at 0.29 and SELU at 0.57 after one layer,
    # tanh's 5/3 at 1.1 to 1.18.
    assert moments == pytest.approx([1.0] * len(moments), abs=0.15), moments


def test_channel_wise_activation_gets_inputs_of_its_width():
    prelu = partial(nn.PReLU, num_parameters=WIDE)  # expects (n, WIDE); slope 0.25
    model = init.KaimingNormal()(wide_mlp(prelu))
    assert hidden_std(model) == pytest.approx(math.sqrt(2 / (1 + 0.25**2) / WIDE), rel=0.02)


class CentredTanh(nn.Module):
    """tanh minus its mean over the layer's units: not element-wise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(x)
        return t - t.mean(-1, keepdim=True)


def test_not_element_wise_activation_is_estimated_on_vectors_of_the_layer_width():
    # Over vectors of 4 units, E[f(z)^2] = (1 - 1/4) E[tanh(z)^2]: a gain 15% above tanh's.
    expected = 1 / math.sqrt(0.75 * TANH_SECOND_MOMENT)
    assert init.activation_gain(CentredTanh(), width=4) == pytest.approx(expected, rel=3e-3)
    torch.manual_seed(0)
    model = init.KaimingNormal()(MLP(4096, 4096, depth=2, width=4, activation=CentredTanh))
    stds = [linear.weight.std().item() for linear in model.linears]
    assert stds == pytest.approx([expected / math.sqrt(4096), expected / 2], rel=0.02)


def test_gain_estimate_is_reproducible_and_leaves_the_random_stream_alone():
    rrelu = nn.RReLU()  # draws its slopes from torch's random stream in training mode
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    gain = init.activation_gain(rrelu)
    assert torch.equal(torch.rand(3), expected)
    assert init.activation_gain(rrelu) == gain


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
