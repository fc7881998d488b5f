"""Mean-field theory: closed forms, Monte Carlo on wide random networks, implied variances."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from fcn_research import initializers as init
from fcn_research import inspection, theory
from fcn_research.activations import Maxout
from fcn_research.callbacks.theory import theory_section
from fcn_research.model import MLP
from fcn_research.results import read_result, write_json_atomic
from fcn_research.run_dirs import CONF_DIR
from fcn_research.train import train

# E[f(z)^2], z ~ N(0, 1), by scipy.integrate.quad to 1e-10 (as tests/test_initializers.py).
SECOND_MOMENTS = {
    nn.Tanh: 0.39429449039784115,
    nn.Sigmoid: 0.293379035858093,
    nn.SiLU: 0.3557755198173523,
    nn.Softplus: 0.9212459088593004,
    nn.GELU: 0.4252214825702986,
    nn.ELU: 0.6449454174929239,
    nn.ReLU: 0.5,
    nn.SELU: 1.0,
}


@pytest.mark.parametrize("kind", list(SECOND_MOMENTS))
def test_quadrature_is_accurate_to_1e_9(kind):
    act = theory.elementwise(kind())
    assert float(theory.moments(act, 1.0).second) == pytest.approx(SECOND_MOMENTS[kind], abs=1e-9)


@pytest.mark.parametrize("q", [0.01, 0.7, 3.0, 40.0])
@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.0, 0.0), (2.0, 0.05), (2.6, 0.3)])
def test_relu_closed_forms(q, sigma_w2, sigma_b2):
    act = theory.elementwise(nn.ReLU())
    assert float(theory.length_map(act, q, sigma_w2, sigma_b2)) == pytest.approx(
        sigma_w2 * q / 2 + sigma_b2, rel=1e-9
    )
    assert theory.chi1(act, sigma_w2, q) == pytest.approx(sigma_w2 / 2, rel=1e-9)
    assert theory.length_map_slope(act, sigma_w2, q) == pytest.approx(sigma_w2 / 2, rel=1e-9)


def test_relu_fixed_point_and_depth_scale():
    act = theory.elementwise(nn.ReLU())
    assert theory.q_star(act, 1.5, 0.1) == pytest.approx(0.1 / (1 - 1.5 / 2), rel=1e-9)
    assert theory.depth_scale(theory.length_map_slope(act, 1.5, 0.4)) == pytest.approx(
        -1 / math.log(0.75)
    )
    # sigma_w2 = 2 with a bias: q grows by sigma_b2 per layer, no fixed point.
    assert theory.q_star(act, 2.0, 0.05) == math.inf
    assert theory.q_star(act, 3.0, 0.0) == math.inf


def test_identity_closed_forms():
    act = theory.elementwise(nn.Identity())
    assert float(theory.length_map(act, 2.0, 0.5, 0.2)) == pytest.approx(0.5 * 2 + 0.2)
    assert theory.chi1(act, 0.5, 2.0) == pytest.approx(0.5)
    assert theory.q_star(act, 0.5, 0.2) == pytest.approx(0.2 / (1 - 0.5), rel=1e-9)


@pytest.mark.parametrize(
    ("activation", "sigma_b2", "expected", "tol"),
    [
        (nn.ReLU(), 0.05, 2.0, 1e-9),
        # q* = 0: chi1 = sigma_w2 tanh'(0)^2; q relaxes like 1/depth there, hence the tolerance
        (nn.Tanh(), 0.0, 1.0, 1e-3),
        (nn.Tanh(), 0.05, 1.76, 0.01),  # Schoenholz et al. (2017), Fig. 1
    ],
)
def test_critical_sigma_w2(activation, sigma_b2, expected, tol):
    assert theory.critical_sigma_w2(activation, sigma_b2) == pytest.approx(expected, abs=tol)


def test_tanh_phases():
    act = theory.elementwise(nn.Tanh())
    critical = theory.critical_sigma_w2(nn.Tanh(), 0.05)
    for sigma_w2, ordered in ((1.0, True), (3.0, False)):
        q = theory.q_star(act, sigma_w2, 0.05)
        assert (theory.chi1(act, sigma_w2, q) < 1) is ordered
        c = theory.correlation_fixed_point(act, sigma_w2, 0.05, q)
        assert (c == 1.0) is ordered
    # xi_c diverges at the edge of chaos and is finite on both sides.
    xi = [
        theory.depth_scale(theory.chi_c(act, s, 0.05, theory.q_star(act, s, 0.05)))
        for s in (1.2, critical, 3.0)
    ]
    assert xi[1] > 100 * max(xi[0], xi[2])


def _wide_network(activation, sigma_w2, sigma_b2, seed, width=1000, depth=6, d=400):
    torch.manual_seed(seed)
    net = MLP(d, 10, depth=depth, width=width, activation=lambda: activation)
    init.VarianceScaling(sigma_w2, sigma_b2)(net)
    return net


def _per_sample_gradient_norms(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """Per Linear, the mean over samples of |dL/dW|^2 for a random linear readout L.

    Per sample, Linear l's weight gradient is delta_l x_{l-1}^T, so its squared norm is
    |delta_l|^2 |x_{l-1}|^2: one batched backward gives every sample's delta.
    """
    pre, inputs, h = [], [], x
    for linear, act in zip(net.linears, [*net.activations, nn.Identity()], strict=True):
        inputs.append(h.detach())
        z = linear(h)
        z.retain_grad()
        pre.append(z)
        h = act(z)
    (h @ torch.randn(h.shape[1])).sum().backward()
    return torch.stack(
        [(z.grad.pow(2).sum(1) * a.pow(2).sum(1)).mean() for z, a in zip(pre, inputs, strict=True)]
    )


@pytest.mark.parametrize(
    ("activation", "sigma_w2", "sigma_b2"),
    [(nn.Tanh(), 1.76, 0.05), (nn.Tanh(), 3.0, 0.1), (nn.SELU(), 1.0, 0.0)],
)
def test_monte_carlo_on_wide_random_networks(activation, sigma_w2, sigma_b2):
    """Per-layer activation std and the gradient's growth through depth, measured on 1000-wide
    random networks, agree with the prediction: std within 3% on each network; gradient norm
    ratios, averaged over 3 networks (each layer's W^T adds ~3% noise that compounds with
    depth), within 6% (chaotic tanh: chi1 = 1.2, so one layer too many or few is off by 10%)."""
    x = torch.randn(64, 400) * 1.3
    pred = theory.predict(
        activation, [theory.LayerVariances(sigma_w2, sigma_b2)] * 6, [1000] * 5, x
    ).values
    sq = torch.zeros(6)
    for seed in range(3):
        net = _wide_network(activation, sigma_w2, sigma_b2, seed)
        h = x
        for layer, (linear, act) in enumerate(zip(net.linears, net.activations, strict=False), 1):
            h = act(linear(h))
            assert h.std().item() == pytest.approx(
                pred[f"activations/std/layer_{layer:02d}"], rel=0.03
            )
        sq += _per_sample_gradient_norms(net, x)
    measured = (sq / sq[-1]).sqrt()
    for layer in range(1, 7):
        assert measured[layer - 1].item() == pytest.approx(
            pred[f"grad_norm/ratio_to_last/layer_{layer:02d}"], rel=0.06
        ), (measured, [v for k, v in pred.items() if "ratio_to_last" in k])


@pytest.mark.parametrize("activation", [Maxout(2), nn.Softmax(dim=-1)])
def test_pooling_or_mixing_activation_is_not_applicable(activation):
    with pytest.raises(theory.NotApplicable, match=type(activation).__name__):
        theory.elementwise(activation)


SCHEMES = {
    "default": init.Default(),
    "xavier_uniform": init.XavierUniform(),
    "xavier_normal": init.XavierNormal(gain=2.0),
    "kaiming_uniform": init.KaimingUniform(),
    "kaiming_normal": init.KaimingNormal(),
    "lecun_normal": init.LecunNormal(),
    "orthogonal": init.Orthogonal(gain=1.3),
    "zeros": init.Zeros(),
    "variance_scaling": init.VarianceScaling(1.7, 0.2),
}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_implied_variances_are_what_the_scheme_draws(name):
    """fan_in Var(W) and Var(b) of every Linear, as drawn, match the implied (sigma_w2, sigma_b2),
    including the input and output Linears of other shapes."""
    torch.manual_seed(0)
    net = MLP(300, 40, depth=3, width=600, activation=nn.Tanh)
    scheme = SCHEMES[name]
    scheme(net)
    for linear, v in zip(net.linears, init.implied_variances(scheme, net), strict=True):
        w_var = linear.weight.pow(2).mean().item() * linear.in_features
        assert w_var == pytest.approx(v.sigma_w2, rel=0.05, abs=1e-12)
        assert linear.bias.pow(2).mean().item() == pytest.approx(v.sigma_b2, rel=0.3, abs=1e-12)


def test_pytorch_default_is_a_third():
    net = MLP(8, 2, depth=3, width=50, activation=nn.ReLU)
    variances = init.implied_variances(init.Default(), net)
    assert [v.sigma_w2 for v in variances] == pytest.approx([1 / 3] * 3)
    assert [v.sigma_b2 for v in variances] == pytest.approx([1 / 24, 1 / 150, 1 / 150])


@pytest.mark.parametrize(
    ("scheme", "reason"),
    [
        (init.ConstantLayer(1, 1.0), "constant weights"),
        (init.NegativeLayer(2), "weights -|w|"),
    ],
)
def test_single_layer_schemes_do_not_fit(scheme, reason):
    net = MLP(8, 2, depth=3, width=50, activation=nn.ReLU)
    with pytest.raises(theory.NotApplicable, match=re.escape(reason)):
        init.implied_variances(scheme, net)


def test_variance_scaling_config_and_bad_value():
    node = OmegaConf.load(CONF_DIR / "initializer" / "variance_scaling.yaml")
    scheme = instantiate(node, sigma_w2=2.0)
    assert (scheme.sigma_w2, scheme.sigma_b2) == (2.0, 0.0)
    with pytest.raises(ValueError, match=r"sigma_b2 must be a number >= 0 .* got -0.1"):
        init.VarianceScaling(1.0, -0.1)


def test_result_json_and_tensorboard_get_the_theory(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "activation=tanh",
        "initializer=variance_scaling",
        "initializer.sigma_w2=1.5",
        "initializer.sigma_b2=0.05",
        "depth=4",
        "width=256",
        "max_epochs=1",
    )
    result = train(cfg)
    section = json.loads((tmp_path / "run" / "result.json").read_text())["theory"]
    assert section == json.loads(json.dumps(result["theory"]))
    assert section["sigma_w2"] == 1.5 and section["chi1"] < 1
    for layer in (1, 2, 3):
        key = f"activations/std/layer_{layer:02d}"
        assert result["init"][key] == pytest.approx(section[key], rel=0.05)
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"theory/chi1", "theory/activations/std/layer_03"} <= set(tags)
    assert events.Scalars("theory/chi1")[0].step == 0


def test_not_applicable_is_said_not_predicted(make_cfg, tmp_path):
    result = train(make_cfg("initializer=constant_layer", "max_epochs=1"))
    assert "chi1" not in result["theory"]
    assert "constant weights" in result["theory"]["not_applicable"]
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert not [t for t in events.Tags()["scalars"] if t.startswith("theory/")]


def test_inspect_init_prints_predicted_beside_measured(capsys):
    inspection.main(
        ["data=digits", "activation=tanh", "initializer=variance_scaling", "depth=4", "width=64"]
    )
    out = capsys.readouterr().out
    assert "theory: sigma_w2 = 1, sigma_b2 = 0" in out
    assert re.search(r"grad_norm/ratio_first_last: measured [\d.]+, predicted [\d.]+", out)
    assert "note: finite width: the narrowest hidden layer has 64 units" in out
    inspection.main(["initializer=negative_layer"])
    out = capsys.readouterr().out
    assert "theory: n/a (NegativeLayer sets Linear 2 to weights -|w|" in out
    assert "n/a" in out.splitlines()[4]  # a layer row's theory cells


def test_resumed_run_keeps_the_theory(make_cfg, tmp_path):
    common = ["activation=tanh", "depth=4", "callbacks.model_checkpoint.min_interval_s=0"]
    job = tmp_path / "job"
    first = train(make_cfg(*common, "max_epochs=1", output_dir=job))["theory"]
    # As a kill leaves it: running, and nothing of the theory written yet.
    write_json_atomic(job / "result.json", {**read_result(job), "status": "running", "theory": {}})
    resumed = train(make_cfg(*common, "max_epochs=2", output_dir=job))
    assert resumed["global_step"] > 0 and resumed["theory"] == first
    events = EventAccumulator(str(job))
    events.Reload()
    assert [e.step for e in events.Scalars("theory/chi1")] == [0]  # not again at the resume


class Float32Only(nn.Module):
    """An activation that refuses the theory's float64 evaluation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"float32 only, got {x.dtype}")
        return torch.tanh(x)


def test_a_failing_prediction_is_reported_not_raised():
    net = MLP(4, 2, depth=3, width=8, activation=Float32Only)
    section = theory_section(net, init.Default(), torch.randn(16, 4))
    assert section == {
        "not_applicable": "the theory failed on this network: TypeError: float32 only, got "
        "torch.float64"
    }


def _he_prediction(activation: nn.Module, scale: float = 1.0) -> tuple[float, dict]:
    """He (sigma_w2 = 1 / E[f(z)^2], no bias) on a depth-4 net of inputs ~ N(0, scale^2)."""
    sigma_w2 = init.activation_gain(activation) ** 2
    variances = [theory.LayerVariances(sigma_w2, 0.0)] * 4
    inputs = scale * torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    return sigma_w2, theory.predict(activation, variances, [500] * 3, inputs).as_dict()


def _no_nan_or_inf(section: dict, allowed: tuple[str, ...] = ()) -> None:
    for key, value in section.items():
        if key in allowed:
            continue
        assert not isinstance(value, str) or key in ("phase", "fixed_point"), (key, value)
        assert not isinstance(value, float) or math.isfinite(value), (key, value)


def test_gelu_at_he_fixed_points_at_zero_and_infinity():
    # sigma_w2 = 2.35: the map's slope is sigma_w2 / 4 = 0.59 at q -> 0 (a stable q* = 0) and
    # sigma_w2 / 2 = 1.18 at large q. Unit inputs start above the unstable point between.
    sigma_w2, grows = _he_prediction(nn.GELU())
    assert sigma_w2 == pytest.approx(2.3517, abs=1e-4)
    assert "q_star" not in grows and "xi_q" not in grows and "xi_c" not in grows
    assert "no stable fixed point" in grows["fixed_point"]
    assert "grows without bound (x1.176 per layer at large q)" in grows["fixed_point"]
    assert grows["chi1"] == pytest.approx(sigma_w2 / 2, rel=1e-6)  # the large-q limit
    assert grows["phase"] == "chaotic"
    stds = [grows[f"preactivations/std/layer_{i:02d}"] for i in (1, 2, 3)]
    assert stds == sorted(stds)  # the layers' predicted variance grows, as the summary says
    _no_nan_or_inf(grows)

    _, shrinks = _he_prediction(nn.GELU(), scale=0.1)  # below it: q -> 0
    assert shrinks["q_star"] == 0.0
    assert shrinks["chi1"] == pytest.approx(sigma_w2 / 4, rel=1e-9)  # sigma_w2 GELU'(0)^2
    assert shrinks["xi_q"] == pytest.approx(-1 / math.log(sigma_w2 / 4), rel=1e-6)
    assert shrinks["xi_c"] == pytest.approx(shrinks["xi_q"], rel=1e-6)
    assert shrinks["phase"] == "ordered" and "q* = 0" in shrinks["fixed_point"]
    _no_nan_or_inf(shrinks)


def test_relu_at_he_is_critical_within_tolerance():
    sigma_w2, section = _he_prediction(nn.ReLU())
    assert sigma_w2 == pytest.approx(2.0, rel=1e-12)
    assert section["chi1"] == pytest.approx(1.0, abs=1e-12)  # 1 + O(1e-15) in float64
    assert section["phase"] == "critical"
    assert (section["xi_q"], section["xi_c"]) == ("inf", "inf")  # diverge at criticality
    assert "marginal fixed point" in section["fixed_point"]
    assert theory.phase(1 + 1e-7) == "critical" and theory.phase(1 + 1e-5) == "chaotic"
    assert theory.depth_scale(1 + 1e-15) == math.inf


def test_swish_learnable_at_he_gives_the_large_q_limit(make_cfg, tmp_path):
    result = train(make_cfg("activation=swish_learnable", "initializer=kaiming_normal"))
    section = result["theory"]
    sigma_w2 = section["sigma_w2"]
    assert sigma_w2 == pytest.approx(1 / SECOND_MOMENTS[nn.SiLU], rel=1e-2)  # He for SiLU
    assert section["chi1"] == pytest.approx(sigma_w2 / 2, rel=1e-6)  # SiLU'(u)^2 -> 1 or 0
    assert section["phase"] == "chaotic"
    assert "no stable fixed point" in section["fixed_point"]
    _no_nan_or_inf(section)
    assert read_result(tmp_path / "run")["theory"] == json.loads(json.dumps(section))
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert events.Scalars("theory/chi1")[0].value == pytest.approx(sigma_w2 / 2, rel=1e-6)
    assert "theory/q_star" not in events.Tags()["scalars"]
