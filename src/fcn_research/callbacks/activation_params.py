"""Parameters inside the activation modules (a learnable slope, a learnable beta), per layer."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from fcn_research.callbacks.probe import (
    layer_tag,
    member_steps,
    mlp_of,
    to_host,
    write_members,
)
from fcn_research.callbacks.schedule import StepInstrument


def activation_parameters(pl_module: L.LightningModule) -> dict[str, Tensor]:
    """Every parameter of every hidden layer's activation module as ``<name>/layer_XX``: one
    copy per member stacked on the first dimension (``StackedActivation``)."""
    return {
        layer_tag(name, layer): parameter
        for layer, act in enumerate(mlp_of(pl_module).activations, 1)
        for name, parameter in act.named_parameters()
    }


class ActivationParameters(StepInstrument):
    """Logs each activation parameter at step 0, on the schedule and at the end of training:
    ``act_param/<name>/layer_XX`` (its value; the mean for a parameter of several numbers)
    and ``act_param_grad_norm/<name>/layer_XX`` (the L2 norm of the gradient that the
    optimizer step is about to apply; at the end of training, the last one measured).

    Any activation module with ``nn.Parameter`` s is covered (``LearnableSwish``'s ``beta``,
    ``nn.PReLU``'s ``weight``); without any it logs nothing.

    Args:
        min_interval, max_interval: the schedule's bounds (``LogSchedule``).
    """

    def __init__(self, min_interval: int = 1, max_interval: int = 1000) -> None:
        super().__init__(min_interval, max_interval)
        self._last_grad_norms: dict[int, dict[str, float]] = {}  # per member
        self._members = 0  # the stack's, once measured

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> list[dict[str, float]]:
        # Per member (M,): each member's own copy of the parameter.
        self._members = mlp_of(pl_module).members
        values: dict[str, Tensor] = {}
        for key, parameter in activation_parameters(pl_module).items():
            values[f"act_param/{key}"] = (
                parameter.detach().float().reshape(len(parameter), -1).mean(1)
            )
            if parameter.grad is not None:
                grad = parameter.grad.detach().float().reshape(len(parameter), -1)
                values[f"act_param_grad_norm/{key}"] = grad.norm(dim=1)
        host = to_host(values)  # one transfer for all of them
        write_members(trainer, host, step, self.at_end)
        steps = member_steps(trainer, step, self._members, self.at_end)
        for m, member in enumerate(host):
            if steps[m] is None:  # a member that stopped keeps what it measured until then
                continue
            grads = {k: v for k, v in member.items() if k.startswith("act_param_grad_norm/")}
            self._last_grad_norms.setdefault(m, {}).update(grads)
        return host

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # After training no gradient is left: the final metrics keep the last one measured.
        if self._last_grad_norms:
            finals = self.final_metrics or [{}] * self._members
            self.final_metrics = [
                {**self._last_grad_norms.get(m, {}), **final} for m, final in enumerate(finals)
            ]

    def state_dict(self) -> dict[str, Any]:
        # One dict per member, in member order (split and joined with a stack's checkpoint).
        norms = [self._last_grad_norms.get(m, {}) for m in range(self._members)]
        return {**super().state_dict(), "last_grad_norms": norms}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        norms = state_dict.get("last_grad_norms", [])
        if isinstance(norms, dict):  # written by a version that kept one network's
            norms = [norms] if norms else []
        self._last_grad_norms = {m: dict(n) for m, n in enumerate(norms) if n}
        self._members = max(self._members, len(norms))
