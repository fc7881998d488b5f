"""Parameters inside the activation modules (a learnable slope, a learnable beta), per layer."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from fcn_research.callbacks.probe import layer_tag, mlp_of, to_host, write_members
from fcn_research.callbacks.schedule import StepInstrument


def activation_parameters(pl_module: L.LightningModule) -> dict[str, Tensor]:
    """Every parameter of every hidden layer's activation module as ``<name>/layer_XX``."""
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
        self._last_grad_norms: dict[str, float] = {}

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> list[dict[str, float]]:
        # An activation with parameters trains in a stack of one (each member would need its
        # own), so these are one network's values.
        values: dict[str, Tensor] = {}
        for key, parameter in activation_parameters(pl_module).items():
            values[f"act_param/{key}"] = parameter.detach().float().mean()
            if parameter.grad is not None:
                values[f"act_param_grad_norm/{key}"] = parameter.grad.detach().float().norm()
        host = to_host(values)  # one transfer for all of them
        write_members(trainer, host, step, self.at_end)
        for member in host[:1]:
            grads = {k: v for k, v in member.items() if k.startswith("act_param_grad_norm/")}
            self._last_grad_norms.update(grads)
        return host

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # After training no gradient is left: the final metrics keep the last one measured.
        if self._last_grad_norms:
            finals = self.final_metrics or [{}]
            self.final_metrics = [{**self._last_grad_norms, **finals[0]}, *finals[1:]]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_grad_norms": dict(self._last_grad_norms)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._last_grad_norms = dict(state_dict.get("last_grad_norms", {}))
