"""Weight-initialization schemes, each applied to every Linear of an MLP after construction.

A scheme is a callable ``scheme(model) -> model``. Named schemes (Glorot, He, LeCun,
orthogonal, zeros) set biases to zero, as in their papers; ``Default`` keeps PyTorch's
own initialization. ``ConstantLayer`` and ``NegativeLayer`` are the seed notebook's
``Initializer`` and ``NegativeInitializer``: they change one Linear and leave the rest
to a base scheme (``Default`` unless set).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from fcn_research.activations import Maxout
from fcn_research.model import MLP
from fcn_research.theory import LayerVariances, NotApplicable

Gain = float | Literal["auto"]

# Size of the Monte-Carlo sample in numbers: E[f(z)^2] of the bundled activations comes out
# within ~0.2% (one standard deviation), so the gain within ~0.1%.
_MC_SAMPLES = 2**19


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _exact_second_moment(activation: nn.Module) -> float | None:
    """E[f(z)^2] for z ~ N(0, 1) where it has a closed form (exact type only), else None.

    A subclass may change ``forward``, so it is estimated instead.
    """
    kind = type(activation)
    if kind is nn.Identity:
        return 1.0
    if kind is nn.ReLU:
        return 0.5
    if kind is nn.LeakyReLU:
        return (1.0 + activation.negative_slope**2) / 2
    if kind is nn.SELU:
        # Klambauer et al. (2017) chose SELU's alpha and scale so that N(0, 1) inputs give
        # outputs of mean 0 and variance 1.
        return 1.0
    if kind is nn.ELU:
        # z > 0 gives 1/2; z < 0 gives alpha^2 E[(e^z - 1)^2; z < 0], by E[e^(tz); z < 0]
        # = e^(t^2/2) Phi(-t).
        negative = math.e**2 * _normal_cdf(-2) - 2 * math.exp(0.5) * _normal_cdf(-1) + 0.5
        return 0.5 + activation.alpha**2 * negative
    if kind is nn.GELU and activation.approximate == "none":
        return 1 / 3 + 1 / (2 * math.pi * math.sqrt(3))  # E[z^2 Phi(z)^2]
    if kind is Maxout and activation.pool_size <= 2:
        # max(z1, z2)^2 + min(z1, z2)^2 = z1^2 + z2^2, and -min(z1, z2) = max(-z1, -z2) has
        # max's law: both squares have mean 1.
        return 1.0
    return None


def activation_gain(activation: nn.Module | None, width: int | None = None) -> float:
    """He's gain ``1 / sqrt(E[f(z)^2])``, z ~ N(0, I): it keeps the pre-activations' second moment.

    With weights of variance gain^2 / fan_in after ``f``, pre-activations of second moment 1
    give pre-activations of second moment 1 in the next layer (He et al., 2015): sqrt(2) for
    ReLU, sqrt(2 / (1 + a^2)) for leaky ReLU, 1 for identity and SELU, ~1.59 for tanh, ~1.85
    for sigmoid. Closed forms where they exist (identity, ReLU, leaky ReLU, ELU, SELU, GELU,
    Maxout of 2); otherwise a fixed-seed Monte-Carlo estimate over vectors ``z`` of ``width``
    numbers (the activation's input: the width of the Linear before it), so channel-wise
    (``nn.PReLU(num_parameters=width)``) and not element-wise activations work too. ``width``
    defaults to one unit's inputs (``pool_size``, 1 for an element-wise activation).
    """
    if activation is None:
        return 1.0
    second_moment = _exact_second_moment(activation)
    if second_moment is None:
        width = width or int(getattr(activation, "pool_size", 1))
        # Forked and seeded: the estimate is reproducible even for an activation that draws
        # random numbers itself (RReLU), and it leaves the caller's random stream alone.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            z = torch.randn(-(-_MC_SAMPLES // width), width)
            # On the CPU, where z is drawn: a copy, so an activation trained on a GPU (the
            # theory instrument asks there) stays where it is.
            second_moment = copy.deepcopy(activation).cpu()(z).pow(2).mean().item()
    if not math.isfinite(second_moment) or second_moment <= 0:
        raise ValueError(
            f"cannot compute a gain for {type(activation).__name__}: E[f(z)^2] = "
            f"{second_moment}; the gain 1 / sqrt(E[f(z)^2]) needs a finite, positive value"
        )
    return 1.0 / math.sqrt(second_moment)


def _feeding_activation(
    model: MLP, layer: int, activations: Sequence[nn.Module] | None = None
) -> tuple[nn.Module | None, int | None]:
    """The activation whose output Linear ``layer`` (1-based) reads, and that activation's width.

    Linear i > 1 reads hidden layer i - 1. Linear 1 reads the data; it takes hidden layer 1's
    activation, as torch's ``kaiming_*`` and He et al. (2015) do for every layer.
    """
    activations = model.activations if activations is None else activations
    if not len(activations):
        return None, None
    source = max(layer - 1, 1)
    return activations[source - 1], model.linears[source - 1].out_features


class Scheme:
    """Base class: apply ``init_linear`` to every Linear of the model."""

    def __call__(self, model: MLP) -> MLP:
        with torch.no_grad():
            for layer, linear in enumerate(model.linears, start=1):
                self.init_linear(linear, *_feeding_activation(model, layer))
        return model

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        """Initialize ``linear``, which reads the output of ``activation`` (input ``width``)."""
        raise NotImplementedError

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        """The (sigma_w2, sigma_b2) this scheme gives ``linear``: Var(W) = sigma_w2 / fan_in,
        Var(b) = sigma_b2 (``fcn_research.theory``'s parameterisation)."""
        raise NotImplementedError


def _resolve_gain(gain: Gain, activation: nn.Module | None, width: int | None) -> float:
    if gain == "auto":
        return activation_gain(activation, width)
    if isinstance(gain, str):
        raise ValueError(f"gain must be a number or 'auto', got {gain!r}")
    return float(gain)


class Default(Scheme):
    """PyTorch's own initialization (kaiming_uniform with a=sqrt(5), uniform bias): no change."""

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        return None

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        # W and b ~ U(+-1/sqrt(fan_in)): variance 1 / (3 fan_in) each.
        return LayerVariances(1 / 3, 1 / (3 * linear.in_features))


class XavierUniform(Scheme):
    """Glorot & Bengio (2010), uniform; gain 1 unless set (``auto`` takes the activation's)."""

    def __init__(self, gain: Gain = 1.0) -> None:
        if not isinstance(gain, str) and not gain >= 0:  # `not >=`: NaN too
            raise ValueError(
                "gain must be a number >= 0 or 'auto' (it scales the weights' spread, "
                f"gain * sqrt(2 / (fan_in + fan_out))), got {gain!r}"
            )
        self.gain = gain

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        nn.init.xavier_uniform_(linear.weight, gain=_resolve_gain(self.gain, activation, width))
        nn.init.zeros_(linear.bias)

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        # Var(W) = gain^2 2 / (fan_in + fan_out), uniform or normal alike.
        fan_in, fan_out = linear.in_features, linear.out_features
        gain = _resolve_gain(self.gain, activation, width)
        return LayerVariances(gain**2 * 2 * fan_in / (fan_in + fan_out), 0.0)


class XavierNormal(XavierUniform):
    """Glorot & Bengio (2010), normal; gain 1 unless set (``auto`` takes the activation's)."""

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        nn.init.xavier_normal_(linear.weight, gain=_resolve_gain(self.gain, activation, width))
        nn.init.zeros_(linear.bias)


class KaimingUniform(Scheme):
    """He et al. (2015), fan_in, uniform: std ``activation_gain / sqrt(fan_in)`` (see there)."""

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        std = activation_gain(activation, width) / math.sqrt(linear.in_features)
        bound = math.sqrt(3.0) * std
        nn.init.uniform_(linear.weight, -bound, bound)
        nn.init.zeros_(linear.bias)

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        return LayerVariances(activation_gain(activation, width) ** 2, 0.0)


class KaimingNormal(KaimingUniform):
    """He et al. (2015), fan_in, normal: std ``activation_gain / sqrt(fan_in)`` (see there)."""

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        std = activation_gain(activation, width) / math.sqrt(linear.in_features)
        nn.init.normal_(linear.weight, 0.0, std)
        nn.init.zeros_(linear.bias)


class LecunNormal(Scheme):
    """LeCun et al. (1998): N(0, 1/fan_in), the initialization SELU's self-normalization needs."""

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        nn.init.normal_(linear.weight, 0.0, 1.0 / math.sqrt(linear.in_features))
        nn.init.zeros_(linear.bias)

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        return LayerVariances(1.0, 0.0)


class Orthogonal(Scheme):
    """Saxe et al. (2014): a (semi-)orthogonal weight matrix times ``gain`` (1 unless set)."""

    def __init__(self, gain: Gain = 1.0) -> None:
        self.gain = gain

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        nn.init.orthogonal_(linear.weight, gain=_resolve_gain(self.gain, activation, width))
        nn.init.zeros_(linear.bias)

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        # Orthonormal rows (fan_out <= fan_in) have squared norm gain^2, so Var(W) =
        # gain^2 / fan_in; orthonormal columns (a wider output) gain^2 / fan_out.
        fan_in, fan_out = linear.in_features, linear.out_features
        gain = _resolve_gain(self.gain, activation, width)
        return LayerVariances(gain**2 * min(1.0, fan_in / fan_out), 0.0)


class Zeros(Scheme):
    """All weights and biases zero: every unit of a layer stays identical (symmetry)."""

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        return LayerVariances(0.0, 0.0)


class VarianceScaling(Scheme):
    """W ~ N(0, sigma_w2 / fan_in), b ~ N(0, sigma_b2): the mean-field theory's parameterisation
    (Poole et al. 2016), for placing a network in the ordered or chaotic phase."""

    def __init__(self, sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> None:
        for name, value in (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(
                    f"VarianceScaling: {name} must be a number >= 0 (a variance), got {value!r}"
                )
        self.sigma_w2 = float(sigma_w2)
        self.sigma_b2 = float(sigma_b2)

    def init_linear(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> None:
        nn.init.normal_(linear.weight, 0.0, math.sqrt(self.sigma_w2 / linear.in_features))
        nn.init.normal_(linear.bias, 0.0, math.sqrt(self.sigma_b2))

    def variances(
        self, linear: nn.Linear, activation: nn.Module | None, width: int | None
    ) -> LayerVariances:
        return LayerVariances(self.sigma_w2, self.sigma_b2)


def implied_variances(
    scheme: object, model: MLP, activations: Sequence[nn.Module] | None = None
) -> list[LayerVariances]:
    """Per Linear of ``model``, the (sigma_w2, sigma_b2) that ``scheme`` draws from
    (``activations``: one member's, in a stack whose activations hold parameters).

    Raises ``NotApplicable`` for a scheme without one: the notebook's single-layer schemes
    (``ConstantLayer``: equal weights, no randomness; ``NegativeLayer``: weights -|w|, of
    non-zero mean), and any scheme that does not implement ``Scheme.variances``.
    """
    if isinstance(scheme, _OneLayer):
        raise NotApplicable(
            f"{type(scheme).__name__} sets Linear {scheme.target_layer} to "
            + ("constant weights" if isinstance(scheme, ConstantLayer) else "weights -|w|")
            + ": not zero-mean random weights, which the mean-field theory assumes"
        )
    if not isinstance(scheme, Scheme) or type(scheme).variances is Scheme.variances:
        raise NotApplicable(
            f"initializer {type(scheme).__name__} does not say which (sigma_w2, sigma_b2) it "
            "draws from (Scheme.variances)"
        )
    return [
        scheme.variances(linear, *_feeding_activation(model, layer, activations))
        for layer, linear in enumerate(model.linears, start=1)
    ]


class _OneLayer:
    """Apply ``base`` to the whole network, then change Linear ``target_layer`` (1-based)."""

    def __init__(self, target_layer: int, base: Scheme | None = None) -> None:
        self.target_layer = target_layer
        self.base = base if base is not None else Default()

    def __call__(self, model: MLP) -> MLP:
        depth = len(model.linears)
        if not 1 <= self.target_layer <= depth:
            raise ValueError(
                f"{type(self).__name__}: target_layer={self.target_layer} is out of range; "
                f"this network has Linear layers 1..{depth} (depth={depth})"
            )
        self.base(model)
        with torch.no_grad():
            self.change(model.linears[self.target_layer - 1])
        return model

    def change(self, linear: nn.Linear) -> None:
        raise NotImplementedError


class ConstantLayer(_OneLayer):
    """The notebook's ``Initializer``: every weight of Linear ``target_layer`` equals ``value``."""

    def __init__(self, target_layer: int, value: float, base: Scheme | None = None) -> None:
        super().__init__(target_layer, base)
        self.value = float(value)

    def change(self, linear: nn.Linear) -> None:
        nn.init.constant_(linear.weight, self.value)


class NegativeLayer(_OneLayer):
    """The notebook's ``NegativeInitializer``: Linear ``target_layer`` gets weights -|w|.

    Behind a ReLU the layer's inputs are >= 0, so negative weights make every
    pre-activation <= 0 *unless the bias lifts it*: that is the notebook's "why is some
    gradient non-zero anyway?". With ``fix_bias`` (default) the bias becomes -|b| too and
    the layer is dead for every input; ``fix_bias=false`` keeps the base scheme's bias.
    """

    def __init__(
        self, target_layer: int, fix_bias: bool = True, base: Scheme | None = None
    ) -> None:
        super().__init__(target_layer, base)
        self.fix_bias = fix_bias

    def change(self, linear: nn.Linear) -> None:
        linear.weight.abs_().neg_()
        if self.fix_bias:
            linear.bias.abs_().neg_()
