"""Weight-initialization schemes, each applied to every Linear of an MLP after construction.

A scheme is a callable ``scheme(model) -> model``. Named schemes (Glorot, He, LeCun,
orthogonal, zeros) set biases to zero, as in their papers; ``Default`` keeps PyTorch's
own initialization. ``ConstantLayer`` and ``NegativeLayer`` are the seed notebook's
``Initializer`` and ``NegativeInitializer``: they change one Linear and leave the rest
to a base scheme (``Default`` unless set).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from fcn_research.model import MLP

Gain = float | Literal["auto"]

# torch.nn.init.calculate_gain's names for the activation classes it knows.
_TORCH_GAIN_NAMES: dict[type[nn.Module], str] = {
    nn.Identity: "linear",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.SELU: "selu",
}

# Monte-Carlo sample for activations torch has no gain for (fixed, so gains are reproducible).
_MC_SAMPLES = 200_000


def activation_gain(activation: nn.Module | None) -> float:
    """The He-style gain of an activation: torch's ``calculate_gain`` where it knows it.

    For activations torch does not know (ELU, GELU, SiLU, Softplus, Maxout, the
    zero-centred sigmoid, user modules) the gain is estimated as ``1 / sqrt(E[f(z)^2])``
    for ``z ~ N(0, 1)``: the factor that keeps the second moment of the pre-activations
    constant from layer to layer, the criterion He et al. derive sqrt(2) from for ReLU.
    """
    if activation is None:
        return 1.0
    if isinstance(activation, nn.LeakyReLU):
        return nn.init.calculate_gain("leaky_relu", activation.negative_slope)
    name = _TORCH_GAIN_NAMES.get(type(activation))
    if name is not None:
        return nn.init.calculate_gain(name)
    pool = int(getattr(activation, "pool_size", 1))
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(_MC_SAMPLES // pool, pool, generator=generator).flatten()
    with torch.no_grad():
        second_moment = activation(z.unsqueeze(0)).pow(2).mean().item()
    if not math.isfinite(second_moment) or second_moment <= 0:
        raise ValueError(
            f"cannot estimate a gain for {type(activation).__name__}: E[f(z)^2] = {second_moment}"
        )
    return 1.0 / math.sqrt(second_moment)


def _network_activation(model: MLP) -> nn.Module | None:
    return model.activations[0] if len(model.activations) else None


class Scheme:
    """Base class: apply ``init_linear`` to every Linear of the model."""

    def __call__(self, model: MLP) -> MLP:
        activation = _network_activation(model)
        with torch.no_grad():
            for linear in model.linears:
                self.init_linear(linear, activation)
        return model

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        raise NotImplementedError


def _resolve_gain(gain: Gain, activation: nn.Module | None) -> float:
    if gain == "auto":
        return activation_gain(activation)
    if isinstance(gain, str):
        raise ValueError(f"gain must be a number or 'auto', got {gain!r}")
    return float(gain)


class Default(Scheme):
    """PyTorch's own initialization (kaiming_uniform with a=sqrt(5), uniform bias): no change."""

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        return None


class XavierUniform(Scheme):
    """Glorot & Bengio (2010), uniform; gain 1 unless set (``auto`` takes the activation's)."""

    def __init__(self, gain: Gain = 1.0) -> None:
        self.gain = gain

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        nn.init.xavier_uniform_(linear.weight, gain=_resolve_gain(self.gain, activation))
        nn.init.zeros_(linear.bias)


class XavierNormal(XavierUniform):
    """Glorot & Bengio (2010), normal; gain 1 unless set (``auto`` takes the activation's)."""

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        nn.init.xavier_normal_(linear.weight, gain=_resolve_gain(self.gain, activation))
        nn.init.zeros_(linear.bias)


class KaimingUniform(Scheme):
    """He et al. (2015), fan_in, uniform, with the gain of the network's activation."""

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        std = activation_gain(activation) / math.sqrt(linear.in_features)
        bound = math.sqrt(3.0) * std
        nn.init.uniform_(linear.weight, -bound, bound)
        nn.init.zeros_(linear.bias)


class KaimingNormal(Scheme):
    """He et al. (2015), fan_in, normal, with the gain of the network's activation."""

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        std = activation_gain(activation) / math.sqrt(linear.in_features)
        nn.init.normal_(linear.weight, 0.0, std)
        nn.init.zeros_(linear.bias)


class LecunNormal(Scheme):
    """LeCun et al. (1998): N(0, 1/fan_in), the initialization SELU's self-normalization needs."""

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        nn.init.normal_(linear.weight, 0.0, 1.0 / math.sqrt(linear.in_features))
        nn.init.zeros_(linear.bias)


class Orthogonal(Scheme):
    """Saxe et al. (2014): a (semi-)orthogonal weight matrix times ``gain`` (1 unless set)."""

    def __init__(self, gain: Gain = 1.0) -> None:
        self.gain = gain

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        nn.init.orthogonal_(linear.weight, gain=_resolve_gain(self.gain, activation))
        nn.init.zeros_(linear.bias)


class Zeros(Scheme):
    """All weights and biases zero: every unit of a layer stays identical (symmetry)."""

    def init_linear(self, linear: nn.Linear, activation: nn.Module | None) -> None:
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)


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
