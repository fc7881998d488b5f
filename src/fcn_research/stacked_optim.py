"""Optimizers over stacked parameters (leading member dimension M) with per-member
hyperparameters: each member gets exactly the update ``torch.optim.SGD`` / ``Adam`` /
``AdamW`` would give it alone.

The numbers follow torch's single-tensor implementations (the one torch uses on CPU) step
for step; per-member scalars (bias corrections, step sizes) are computed on the host in
double precision, as torch computes its Python-float scalars, then applied as float32
tensors broadcast over each member's slice.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fcn_research.stack_spec import MEMBER_OPTIMIZER_HPARAMS


def _class(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


# Keyword arguments that may differ between the members of one stack: numeric ones.
NUMERIC = {_class(target): keys for target, keys in MEMBER_OPTIMIZER_HPARAMS.items()}
# Options that the stacked versions implement only at these values (else: a stack of one).
FIXED = {"maximize": False, "amsgrad": False, "differentiable": False, "capturable": False}
# Options that choose torch's implementation only: the numbers are the same.
IMPLEMENTATION = ("foreach", "fused")


def _per_member(values: Sequence[float], like: Tensor) -> Tensor:
    """(M,) host values as a float tensor of shape (M, 1, ...) broadcasting over ``like``."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(
        -1, *([1] * (like.dim() - 1))
    )


class StackedOptimizer(torch.optim.Optimizer):
    """Base: one param group whose hyperparameters are lists with one value per member.

    ``frozen`` (a (M,) bool tensor, or None) stops members from updating: their gradient is
    taken as zero and their learning rate as zero (a diverged member, whose non-finite
    gradient must not reach its state's arithmetic as NaN * 0), and their update direction
    as zero, so their weights stay exactly as they were (an inf in a momentum buffer times a
    zero learning rate would be NaN).
    """

    def __init__(self, params: Iterable[nn.Parameter], members: int, **hparams: Any) -> None:
        for key, values in hparams.items():
            if isinstance(values, list) and len(values) != members:
                raise ValueError(f"{key} needs one value per member ({members}), got {values}")
        super().__init__(list(params), hparams)
        self.members = members
        self.frozen: Tensor | None = None

    def _grad(self, p: Tensor) -> Tensor:
        g = p.grad
        if self.frozen is not None:
            g = torch.where(self.frozen.view(-1, *([1] * (p.dim() - 1))), 0.0, g)
        return g

    def _direction(self, d: Tensor) -> Tensor:
        if self.frozen is not None:
            d = torch.where(self.frozen.view(-1, *([1] * (d.dim() - 1))), 0.0, d)
        return d

    def _lrs(self, group: dict[str, Any]) -> list[float]:
        lrs = list(group["lr"])
        if self.frozen is not None:
            frozen = self.frozen.tolist()
            lrs = [0.0 if f else lr for lr, f in zip(lrs, frozen, strict=True)]
        return lrs


class StackedSGD(StackedOptimizer):
    """``torch.optim.SGD`` per member: lr, momentum, dampening, weight_decay per member."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: Sequence[float],
        momentum: Sequence[float],
        dampening: Sequence[float],
        weight_decay: Sequence[float],
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            params,
            len(lr),
            lr=list(lr),
            momentum=list(momentum),
            dampening=list(dampening),
            weight_decay=list(weight_decay),
            nesterov=nesterov,
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lrs = self._lrs(group)
            momentum, wd = group["momentum"], group["weight_decay"]
            # A member without momentum keeps no buffer in torch: its "buffer" is the
            # gradient itself (momentum 0, dampening 0 make buf = g exactly).
            damp = [d if m != 0 else 0.0 for d, m in zip(group["dampening"], momentum, strict=True)]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._grad(p)
                if any(wd):
                    g = g + _per_member(wd, p) * p
                if any(momentum):
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.clone()
                    else:
                        buf.mul_(_per_member(momentum, p)).add_(
                            g * _per_member([1 - d for d in damp], p)
                        )
                    g = g + _per_member(momentum, p) * buf if group["nesterov"] else buf
                p.addcmul_(self._direction(g), _per_member([-lr for lr in lrs], p))
        return loss


class StackedAdam(StackedOptimizer):
    """``torch.optim.Adam`` (or, ``decoupled``, ``AdamW``) per member: lr, betas, eps and
    weight_decay per member."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: Sequence[float],
        betas: Sequence[Sequence[float]],
        eps: Sequence[float],
        weight_decay: Sequence[float],
        decoupled: bool = False,
    ) -> None:
        super().__init__(
            params,
            len(lr),
            lr=list(lr),
            betas=[tuple(b) for b in betas],
            eps=list(eps),
            weight_decay=list(weight_decay),
            decoupled=decoupled,
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lrs = self._lrs(group)
            beta1 = [b[0] for b in group["betas"]]
            beta2 = [b[1] for b in group["betas"]]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = self._grad(p)
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = float(state["step"])
                if any(wd):
                    if group["decoupled"]:
                        p.mul_(_per_member([1 - lr * w for lr, w in zip(lrs, wd, strict=True)], p))
                    else:
                        g = g + _per_member(wd, p) * p
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(g, _per_member([1 - b for b in beta1], p))
                exp_avg_sq.mul_(_per_member(beta2, p)).addcmul_(
                    g * _per_member([1 - b for b in beta2], p), g
                )
                step_size = [-lr / (1 - b1**step) for lr, b1 in zip(lrs, beta1, strict=True)]
                bc2_sqrt = [math.sqrt(1 - b2**step) for b2 in beta2]
                denom = (exp_avg_sq.sqrt() / _per_member(bc2_sqrt, p)).add_(
                    _per_member(group["eps"], p)
                )
                p.addcmul_(self._direction(exp_avg / denom), _per_member(step_size, p))
        return loss


def _keywords(factory: Callable[..., torch.optim.Optimizer]) -> tuple[type, dict[str, Any]]:
    """The optimizer class and every keyword argument (class defaults filled in) of a
    ``functools.partial`` factory as Hydra's ``_partial_: true`` builds it."""
    if not isinstance(factory, functools.partial) or not isinstance(factory.func, type):
        raise ValueError(
            f"a stacked optimizer needs a partial of an optimizer class, got {factory!r}"
        )
    cls = factory.func
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return cls, {**defaults, **factory.keywords}


def stack_refusal(factories: Sequence[Callable[..., torch.optim.Optimizer]]) -> str | None:
    """Why these members' optimizers cannot share a stacked optimizer (None: they can)."""
    try:
        kinds = [_keywords(f) for f in factories]
    except ValueError as err:
        return str(err)
    cls = kinds[0][0]
    if cls not in NUMERIC:
        names = ", ".join(c.__name__ for c in NUMERIC)
        return f"{cls.__name__} has no stacked implementation (stacked: {names})"
    for key, value in FIXED.items():
        if kinds[0][1].get(key, value) != value:
            return f"{cls.__name__}({key}={kinds[0][1][key]!r}) has no stacked implementation"
    fixed_keys = set(kinds[0][1]) - set(NUMERIC[cls]) - set(IMPLEMENTATION)
    for other_cls, other in kinds[1:]:
        if other_cls is not cls:
            return f"one stack mixes optimizers {cls.__name__} and {other_cls.__name__}"
        differing = [k for k in fixed_keys if other.get(k) != kinds[0][1].get(k)]
        if differing:
            return f"stack members differ in optimizer options {sorted(differing)}"
    return None


def stacked_optimizer(
    factories: Sequence[Callable[..., torch.optim.Optimizer]], params: Iterable[nn.Parameter]
) -> torch.optim.Optimizer:
    """One optimizer over stacked ``params`` giving member m what ``factories[m]`` would.

    A stack of one gets its own optimizer, whatever it is (every torch optimizer updates a
    parameter of shape (1, ...) as it would the same parameter without the member axis).
    """
    if len(factories) == 1:
        return factories[0](params)
    refusal = stack_refusal(factories)
    if refusal:
        raise ValueError(refusal)
    cls = _keywords(factories[0])[0]
    kw = [_keywords(f)[1] for f in factories]
    per = {key: [k[key] for k in kw] for key in NUMERIC[cls]}
    if cls is torch.optim.SGD:
        return StackedSGD(params, nesterov=bool(kw[0]["nesterov"]), **per)
    decoupled = cls is torch.optim.AdamW or bool(kw[0].get("decoupled_weight_decay"))
    return StackedAdam(params, decoupled=decoupled, **per)
