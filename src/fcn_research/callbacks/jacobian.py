"""Singular values of the network's Jacobian through its hidden layers (dynamical isometry)."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.func import jacrev, vmap

from fcn_research.callbacks.probe import mlp_of, probe_set, to_host, write_members
from fcn_research.callbacks.schedule import StepInstrument
from fcn_research.model import MLP, StackedActivation, StackedMLP, apply_rows


def hidden_jacobian_singular_values(model: StackedMLP | MLP, x: Tensor) -> Tensor:
    """Per member and input sample, the singular values of J = d h_{depth-1} / d h_1, the
    Jacobian of the last hidden layer with respect to the first: the product of D_l W_l over
    Linears 2..depth-1 (D_l: the activation's derivative), shape ``(members, samples, width)``
    (a plain ``MLP`` is a stack of one).

    The input and output Linears change the dimension (64 pixels in, 10 classes out), not how
    a signal fares through depth, so they are left out: at a constant width J is square, as
    in Pennington et al. (2017). ``depth`` < 3 (no hidden-to-hidden Linear) gives J = I.
    A sample whose Jacobian is not finite (a diverged member) gets NaN singular values.
    """
    if isinstance(model, MLP):
        model = StackedMLP([model])
    with torch.no_grad():
        h1 = apply_rows(model.activations[0], model.linears[0](x))  # (M, samples, width)
    hidden = list(zip(model.linears[1:-1], model.activations[1:], strict=True))
    weights = [linear.weight for linear, _ in hidden]
    biases = [linear.bias for linear, _ in hidden]
    # Each member's copy of an activation's parameters (StackedActivation), mapped over with
    # its weights; an activation without any is shared ({}).
    states = [act.member_state() if isinstance(act, StackedActivation) else {} for _, act in hidden]

    def through_hidden(
        ws: list[Tensor], bs: list[Tensor], ss: list[dict[str, Tensor]], h: Tensor
    ) -> Tensor:
        # One member, one sample; the activation sees the (1, width) row it is written for.
        for w, b, state, (_, act) in zip(ws, bs, ss, hidden, strict=True):
            row = (w @ h + b).unsqueeze(0)
            h = (act.apply_one(state, row) if state else act(row)).squeeze(0)
        return h

    per_sample = vmap(jacrev(through_hidden, argnums=3), in_dims=(None, None, None, 0))
    jac = vmap(per_sample)(weights, biases, states, h1)  # members, then samples
    # A diverged member's Jacobian holds NaN or inf, on which the SVD fails (for the whole
    # batch, on the CPU): it is taken on zeros instead and reported as NaN, so a member's
    # divergence never reaches another member's values, nor fails the run.
    finite = jac.isfinite().flatten(-2).all(-1)  # (M, samples)
    s = torch.linalg.svdvals(torch.where(finite[..., None, None], jac, 0.0))
    return torch.where(finite[..., None], s, math.nan)


class JacobianSpectrum(StepInstrument):
    """Logs ``jacobian/singular_value_mean``, ``.../max`` and ``.../min``: the singular values
    of the hidden-layer Jacobian (``hidden_jacobian_singular_values``) on ``probe_size``
    samples of the probe set, at step 0, on the schedule and at the end. Dynamical isometry
    (Pennington et al. 2017) is all of them near 1: a signal and its gradient then keep their
    norm *and* shape through depth, not only on average (which chi1 = 1 already gives).

    Off by default (one Jacobian per probe sample costs depth x width backward passes);
    ``+callbacks.jacobian=...`` or ``experiment=dynamical_isometry`` turns it on.

    Args:
        min_interval: smallest logging interval in steps (see ``LogSchedule``).
        max_interval: largest logging interval in steps.
        probe_size: number of probe samples whose Jacobians are taken.
    """

    def __init__(self, min_interval: int = 1, max_interval: int = 1000, probe_size: int = 8):
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {probe_size}")
        super().__init__(min_interval, max_interval)
        self.probe_size = probe_size
        self._probe: Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probe, _ = probe_set(trainer, self.probe_size)

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> list[dict[str, float]]:
        model = mlp_of(pl_module)
        was_training = model.training
        model.eval()
        try:
            s = hidden_jacobian_singular_values(model, self._probe)
        finally:
            model.train(was_training)
        s = s.flatten(1)
        values = to_host(
            {
                "jacobian/singular_value_mean": s.mean(1),
                "jacobian/singular_value_max": s.amax(1),
                "jacobian/singular_value_min": s.amin(1),
            }
        )
        write_members(trainer, values, step, self.at_end)
        return values

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probe = None  # hold no tensors between runs
