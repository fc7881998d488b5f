"""Dead and saturated units and activation statistics of every hidden layer, on the probe set."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor, nn

from fcn_research.callbacks.probe import (
    layer_tag,
    mlp_of,
    probe_set,
    to_host,
    write_members,
)
from fcn_research.callbacks.schedule import StepInstrument
from fcn_research.model import (
    MLP,
    StackedActivation,
    StackedMLP,
    mixes_rows,
    pool_size,
    rows_jacobian,
)

# A unit is dead when |d act/d z| <= DEAD_TOL at every probe point: no gradient passes.
# Exact for ReLU (derivative 0 or 1); for a sigmoid it means the derivative underflowed.
DEAD_TOL = 1e-8
# A (unit, sample) pair is saturated when its derivative is below this fraction of the
# activation's peak derivative (tanh: |z| > ~2.4; sigmoid: |z| > ~4.4; ReLU: z <= 0).
SATURATION_FRACTION = 0.05
# A unit passes low gradient when its mean |d act/d z| over the probe set is below this
# absolute value: one scale for every activation (the identity's derivative is 1), so smooth
# activations compare with ReLU, where "dead" is 0 by construction and "saturated" is
# relative to each activation's own peak (a sigmoid unit at its peak passes 0.25).
LOW_GRADIENT_THRESHOLD = 0.05
# Grid on which the peak derivative of an activation is searched (step 0.02, includes 0).
_PEAK_GRID = torch.linspace(-20.0, 20.0, 2001)
# The most (output unit x sample x input) derivatives one batched backward may hold (64 MiB).
_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class ActivationProfile:
    """What the instruments need to know about one layer's activation module.

    Attributes:
        elementwise: each output depends only on its own input (or its own ``pool_size``
            pieces): then one backward of the summed output gives every unit's derivative.
        peak: per output unit, the largest |d act/d z| on a grid over [-20, 20]; for a
            ``StackedActivation``, per member: (M, 1, units).
    """

    elementwise: bool
    peak: Tensor


def _structure(activation: nn.Module, width_in: int, device: torch.device) -> bool:
    """Whether the activation is element-wise (per unit or per pool of pieces), from its exact
    Jacobian at three random points (every member's, for a ``StackedActivation``); raise if it
    mixes samples of a batch."""
    pool = pool_size(activation)
    if isinstance(activation, StackedActivation):
        jacs = list(member_rows_jacobians(activation, width_in, device))
    else:
        jacs = [rows_jacobian(activation, width_in, device)]
    if any(mixes_rows(jac) for jac in jacs):
        raise ValueError(
            f"{type(activation).__name__} mixes the samples of a batch (one sample's output "
            "depends on another's input); dead and saturated units are per-sample quantities. "
            "Switch the neuron instrument off with callbacks.neurons=null"
        )
    nonzero = torch.stack(jacs) != 0
    samples = torch.eye(nonzero.shape[1], dtype=torch.bool, device=device)
    units = nonzero.shape[2]
    own = (
        torch.arange(width_in, device=device) // pool == torch.arange(units, device=device)[:, None]
    )
    return not (nonzero & ~(samples[:, None, :, None] & own[None, :, None, :])).any()


def member_rows_jacobians(
    activation: StackedActivation, width_in: int, device: torch.device
) -> Tensor:
    """``rows_jacobian`` of every member's copy at once, (M, 3, units, 3, width_in): one
    batched backward per output number, the same for every member (members never mix)."""
    members = activation.n_members
    z = torch.randn(3, width_in, generator=torch.Generator().manual_seed(0)).to(device)
    z = z.expand(members, -1, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        out = activation(z.clone())  # (M, 3, units)
        k = out[0].numel()
        basis = torch.eye(k, device=device, dtype=out.dtype).view(k, 1, *out.shape[1:])
        (g,) = torch.autograd.grad(out, z, basis.expand(k, *out.shape), is_grads_batched=True)
    return g.movedim(0, 1).reshape(members, *out.shape[1:], 3, width_in).detach()


def _own_derivatives(out: Tensor, z: Tensor, pool: int) -> Tensor:
    """|d out_u / d z_i| for each unit u and its own pieces i, summed over the pieces: the
    Jacobian's diagonal, by batched backwards over the output units (in chunks)."""
    n, units = out.shape
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n * z.shape[1]))
    eye = torch.eye(units, device=out.device, dtype=out.dtype)
    parts = []
    for lo in range(0, units, chunk):
        hi = min(units, lo + chunk)
        grad_out = eye[lo:hi].unsqueeze(1).expand(hi - lo, n, units)
        (g,) = torch.autograd.grad(out, z, grad_out, retain_graph=True, is_grads_batched=True)
        rows = torch.arange(hi - lo, device=g.device)
        g = g.unflatten(-1, (units, pool))[rows, :, torch.arange(lo, hi, device=g.device)]
        parts.append(g.abs().sum(-1).T)  # (n, hi - lo)
    return torch.cat(parts, 1)


def activate_with_derivative(
    activation: nn.Module, z: Tensor, elementwise: bool = True
) -> tuple[Tensor, Tensor]:
    """The activation's output on ``z`` and |d act_u/d z_u| per (sample, output unit), by
    autograd on the activation module itself (one forward serves both).

    The derivative of each unit is with respect to its own pre-activation (the Jacobian's
    diagonal, not a column sum); for a pooling activation (``pool_size`` k: k consecutive
    inputs per output unit, as Maxout) with respect to its own k pieces, summed: a unit passes
    gradient through whichever of them is active. ``elementwise`` (see ``ActivationProfile``)
    takes the cheap path: one backward of the summed output.
    """
    pool = pool_size(activation)
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        # clone: an in-place activation must not write into the leaf it is differentiated by.
        out = activation(z.clone())
        if elementwise:
            (d,) = torch.autograd.grad(out.sum(), z)
            d = d.abs()
            d = d.unflatten(-1, (-1, pool)).sum(-1) if pool > 1 else d
        else:
            d = _own_derivatives(out, z, pool)
    return out.detach(), d


def profile_activation(
    activation: nn.Module, width_in: int | None = None, device: torch.device | None = None
) -> ActivationProfile:
    """Structure and per-unit peak derivative of ``activation`` on inputs of ``width_in``
    features (the Linear's output width; default one unit's ``pool_size`` pieces), the peak
    on ``device`` (the layer's; default where the activation's parameters are).

    Probed where the activation's parameters are (the CPU for one without any: ReLU, tanh),
    so the layer's device matters only for where the result goes.
    """
    width_in = width_in or pool_size(activation)
    own = next(activation.parameters(), torch.empty(0)).device
    elementwise = _structure(activation, width_in, own)
    z = _PEAK_GRID.to(own).unsqueeze(1).expand(-1, width_in).contiguous()
    if isinstance(activation, StackedActivation):  # every member's copy on the grid, as rows
        members = activation.n_members
        _, d = activate_with_derivative(activation, z.repeat(members, 1), elementwise)
        peak = d.view(members, len(z), -1).amax(1, keepdim=True)
    else:
        _, d = activate_with_derivative(activation, z, elementwise)
        peak = d.amax(0)
    return ActivationProfile(elementwise, peak.to(device or own))


def peak_derivative(activation: nn.Module, width_in: int | None = None) -> Tensor:
    """Per output unit, the largest |d act/d z| on a grid over [-20, 20] (0.25 for sigmoid,
    1 for tanh/ReLU)."""
    return profile_activation(activation, width_in).peak


def profile_layers(model: StackedMLP | MLP) -> list[ActivationProfile]:
    """``profile_activation`` of every hidden layer's activation, at that layer's width."""
    return [
        profile_activation(act, linear.out_features, linear.weight.device)
        for linear, act in zip(model.linears, model.activations, strict=False)
    ]


@torch.no_grad()
def neuron_stats(
    model: StackedMLP | MLP,
    x: Tensor,
    dead_tol: float = DEAD_TOL,
    saturation_fraction: float = SATURATION_FRACTION,
    profiles: list[ActivationProfile] | None = None,
    low_gradient_threshold: float = LOW_GRADIENT_THRESHOLD,
) -> dict[str, Tensor]:
    """Dead / saturated / low-gradient fractions and activation mean / std of every hidden
    layer on ``x``, per member of the stack: each a (M,) tensor.

    Runs the model in eval mode; gradients are computed only for the activation's own
    derivative and never reach the parameters. ``profiles`` (``profile_layers``) can be
    computed once per run. A plain ``MLP`` is measured as a stack of one.
    """
    if isinstance(model, MLP):
        model = StackedMLP([model])
    if profiles is None:
        profiles = profile_layers(model)
    was_training = model.training
    model.eval()
    stats: dict[str, Tensor] = {}
    dead_counts: list[Tensor] = []
    low_counts: list[Tensor] = []
    saturated_counts: list[Tensor] = []
    total_units = 0
    h = x
    layers = zip(model.linears, model.activations, profiles, strict=False)
    for i, (linear, act, profile) in enumerate(layers, 1):
        z = linear(h)  # (M, n, k * units)
        members, n = z.shape[:2]
        # The activation sees the (M * n, features) rows of a plain MLP (see apply_rows).
        h, d = activate_with_derivative(act, z.reshape(members * n, -1), profile.elementwise)
        h, d = h.view(members, n, -1), d.view(members, n, -1)
        # Dead: even the largest derivative over the probe samples is within tolerance.
        dead = (d.amax(dim=1) <= dead_tol).sum(1)
        dead_counts.append(dead)
        total_units += d.shape[2]
        # Two-pass mean and (unbiased) std: torch.std's single-pass kernel is ~10x slower on CPU.
        flat = h.flatten(1)
        mean = flat.mean(1)
        std = ((flat - mean[:, None]).square().sum(1) / max(flat.shape[1] - 1, 1)).sqrt()
        # Each unit against its own peak (channel-wise activations such as PReLU differ).
        saturated = (d < saturation_fraction * profile.peak).flatten(1).sum(1)
        low = (d.mean(dim=1) < low_gradient_threshold).sum(1)
        low_counts.append(low)
        saturated_counts.append(saturated)
        stats[layer_tag("neurons/dead_fraction", i)] = dead / d.shape[2]
        stats[layer_tag("neurons/saturated_fraction", i)] = saturated / d[0].numel()
        stats[layer_tag("neurons/low_gradient_fraction", i)] = low / d.shape[2]
        stats[layer_tag("activations/mean", i)] = mean
        stats[layer_tag("activations/std", i)] = std
    if total_units:
        stats["neurons/dead_fraction"] = torch.stack(dead_counts).sum(0) / total_units
        stats["neurons/low_gradient_fraction"] = torch.stack(low_counts).sum(0) / total_units
        # Every hidden layer has the same number of probe samples: pairs = samples x units.
        pairs = x.shape[-2] * total_units
        stats["neurons/saturated_fraction"] = torch.stack(saturated_counts).sum(0) / pairs
    model.train(was_training)
    return stats


class NeuronMonitor(StepInstrument):
    """Logs ``neurons/{dead,saturated,low_gradient}_fraction[/layer_XX]`` and
    ``activations/{mean,std}/layer_XX`` on the probe set: at step 0, on the schedule, at the end.

    Args:
        min_interval: smallest logging interval in steps (see ``LogSchedule``).
        max_interval: largest logging interval in steps.
        probe_size: number of training samples in the probe set (fixed for the run).
        dead_tol: a unit is dead when |d act/d z| <= dead_tol on every probe sample.
        saturation_fraction: saturated when |d act/d z| < this fraction of the unit's peak
            derivative.
        low_gradient_threshold: a unit passes low gradient when its mean |d act/d z| over the
            probe samples is below this absolute value (the same for every activation).
    """

    def __init__(
        self,
        min_interval: int = 1,
        max_interval: int = 1000,
        probe_size: int = 512,
        dead_tol: float = DEAD_TOL,
        saturation_fraction: float = SATURATION_FRACTION,
        low_gradient_threshold: float = LOW_GRADIENT_THRESHOLD,
    ) -> None:
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {probe_size}")
        if not 0.0 < saturation_fraction < 1.0:
            raise ValueError(f"saturation_fraction must be in (0, 1), got {saturation_fraction}")
        if not low_gradient_threshold > 0.0:
            raise ValueError(
                f"low_gradient_threshold must be > 0 (an absolute |d act/d z|, e.g. 0.05), "
                f"got {low_gradient_threshold}"
            )
        super().__init__(min_interval, max_interval)
        self.probe_size = probe_size
        self.dead_tol = dead_tol
        self.saturation_fraction = saturation_fraction
        self.low_gradient_threshold = low_gradient_threshold
        self._probe: Tensor | None = None
        self._profiles: list[ActivationProfile] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Drawn here, once the data sits on the training device.
        self._probe, _ = probe_set(trainer, self.probe_size)
        self._profiles = profile_layers(mlp_of(pl_module))

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> list[dict[str, float]]:
        stats = neuron_stats(
            mlp_of(pl_module),
            self._probe,
            self.dead_tol,
            self.saturation_fraction,
            self._profiles,
            self.low_gradient_threshold,
        )
        values = to_host(stats)
        write_members(trainer, values, step, self.at_end)
        return values

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Hold no tensors between runs.
        self._probe = None
        self._profiles = None
