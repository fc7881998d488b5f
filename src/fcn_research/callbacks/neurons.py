"""Dead and saturated units and activation statistics of every hidden layer, on the probe set."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn

from fcn_research.callbacks.probe import (
    layer_tag,
    mlp_of,
    probe_set,
    tensorboard,
    to_host,
    write_scalars,
)
from fcn_research.callbacks.schedule import StepInstrument
from fcn_research.model import MLP

# A unit is dead when |d act/d z| <= DEAD_TOL at every probe point: no gradient passes.
# Exact for ReLU (derivative 0 or 1); for a sigmoid it means the derivative underflowed.
DEAD_TOL = 1e-8
# A (unit, sample) pair is saturated when its derivative is below this fraction of the
# activation's peak derivative (tanh: |z| > ~2.4; sigmoid: |z| > ~4.4; ReLU: z <= 0).
SATURATION_FRACTION = 0.05
# Grid on which the peak derivative of an activation is searched.
_PEAK_GRID = torch.linspace(-20.0, 20.0, 8001)


def activate_with_derivative(activation: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """The activation's output on ``z`` and |d act/d z| per (sample, output unit), by
    autograd on the activation module itself (one forward serves both).

    For a pooling activation (``pool_size`` k: k consecutive inputs per output unit) a unit
    passes gradient through whichever of its k pieces is active: the k derivatives are summed.
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        # clone: an in-place activation must not write into the leaf it is differentiated by.
        out = activation(z.clone())
        (d,) = torch.autograd.grad(out.sum(), z)
    d = d.abs()
    pool = int(getattr(activation, "pool_size", 1))
    return out.detach(), (d.unflatten(-1, (-1, pool)).sum(-1) if pool > 1 else d)


def peak_derivative(activation: nn.Module) -> Tensor:
    """The largest |d act/d z| on a grid over [-20, 20] (0.25 for sigmoid, 1 for tanh/ReLU)."""
    pool = int(getattr(activation, "pool_size", 1))
    device = next(activation.parameters(), torch.empty(0)).device
    z = _PEAK_GRID.to(device).unsqueeze(1).repeat(1, pool)
    return activate_with_derivative(activation, z)[1].max()


@torch.no_grad()
def neuron_stats(
    model: MLP,
    x: Tensor,
    dead_tol: float = DEAD_TOL,
    saturation_fraction: float = SATURATION_FRACTION,
    peaks: list[Tensor] | None = None,
) -> dict[str, Tensor]:
    """Dead / saturated fractions and activation mean / std of every hidden layer on ``x``.

    Runs the model in eval mode; gradients are computed only for the activation's own
    derivative and never reach the parameters.
    """
    was_training = model.training
    model.eval()
    stats: dict[str, Tensor] = {}
    dead_counts: list[Tensor] = []
    total_units = 0
    h = x
    for i, (linear, act) in enumerate(zip(model.linears, model.activations, strict=False), 1):
        h, d = activate_with_derivative(act, linear(h))
        peak = peaks[i - 1] if peaks is not None else peak_derivative(act)
        # Dead: even the largest derivative over the probe samples is within tolerance.
        dead = (d.amax(dim=0) <= dead_tol).sum()
        dead_counts.append(dead)
        total_units += d.shape[1]
        # Two-pass mean and (unbiased) std: torch.std's single-pass kernel is ~10x slower on CPU.
        mean = h.mean()
        std = ((h - mean).square().sum() / max(h.numel() - 1, 1)).sqrt()
        saturated = torch.count_nonzero(d < saturation_fraction * peak) / d.numel()
        stats[layer_tag("neurons/dead_fraction", i)] = dead / d.shape[1]
        stats[layer_tag("neurons/saturated_fraction", i)] = saturated
        stats[layer_tag("activations/mean", i)] = mean
        stats[layer_tag("activations/std", i)] = std
    if total_units:
        stats["neurons/dead_fraction"] = torch.stack(dead_counts).sum() / total_units
    model.train(was_training)
    return stats


class NeuronMonitor(StepInstrument):
    """Logs ``neurons/dead_fraction[/layer_XX]``, ``neurons/saturated_fraction/layer_XX`` and
    ``activations/{mean,std}/layer_XX`` on the probe set: at step 0, on the schedule, at the end.

    Args:
        min_interval: smallest logging interval in steps (see ``LogSchedule``).
        max_interval: largest logging interval in steps.
        probe_size: number of training samples in the probe set (fixed for the run).
        dead_tol: a unit is dead when |d act/d z| <= dead_tol on every probe sample.
        saturation_fraction: saturated when |d act/d z| < this fraction of the peak derivative.
    """

    def __init__(
        self,
        min_interval: int = 1,
        max_interval: int = 1000,
        probe_size: int = 512,
        dead_tol: float = DEAD_TOL,
        saturation_fraction: float = SATURATION_FRACTION,
    ) -> None:
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {probe_size}")
        if not 0.0 < saturation_fraction < 1.0:
            raise ValueError(f"saturation_fraction must be in (0, 1), got {saturation_fraction}")
        super().__init__(min_interval, max_interval)
        self.probe_size = probe_size
        self.dead_tol = dead_tol
        self.saturation_fraction = saturation_fraction
        self._probe: Tensor | None = None
        self._peaks: list[Tensor] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Drawn here, once the data sits on the training device.
        self._probe, _ = probe_set(trainer, self.probe_size)
        self._peaks = [peak_derivative(act) for act in mlp_of(pl_module).activations]

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> dict[str, float]:
        stats = neuron_stats(
            mlp_of(pl_module), self._probe, self.dead_tol, self.saturation_fraction, self._peaks
        )
        values = to_host(stats)
        writer = tensorboard(trainer)
        if writer is not None:
            write_scalars(writer, values, step)
        return values

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._probe is not None:
            self.final_metrics = self.measure(trainer, pl_module, trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Hold no tensors between runs.
        self._probe = None
        self._peaks = None
