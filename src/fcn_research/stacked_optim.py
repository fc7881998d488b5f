"""Optimizers over stacked parameters (leading member dimension M) with per-member
hyperparameters: each member gets exactly the update ``torch.optim.SGD`` / ``Adam`` /
``AdamW`` would give it alone.

The numbers follow torch's single-tensor implementations (the one torch uses on CPU) step
for step. Per-member scalars are (M,) tensors on the parameters' device, broadcast over each
member's slice: the hyperparameters built once, Adam's bias corrections and step sizes
computed every step in double precision (as torch computes its Python-float scalars) and
applied as float32. A step never waits for the device.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
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


class _Constants:
    """A param group's per-member constants on one device and dtype: (M,) tensors, and their
    views of shape (M, 1, ...) that broadcast over a parameter of each rank."""

    def __init__(self, base: dict[str, Tensor]) -> None:
        self.base = base
        self.views: dict[int, dict[str, Tensor]] = {}
        self.step: float | None = None  # the step count the bias corrections were computed for

    def of(self, p: Tensor) -> dict[str, Tensor]:
        views = self.views.get(p.dim())
        if views is None:
            shape = (-1, *([1] * (p.dim() - 1)))
            views = self.views[p.dim()] = {k: v.view(shape) for k, v in self.base.items()}
        return views


class StackedOptimizer(torch.optim.Optimizer):
    """Base: one param group whose hyperparameters are lists with one value per member.

    ``frozen`` (a (M,) bool tensor, or None; assign a new one to change it) stops members from
    updating: their gradient is taken as zero and their learning rate as zero (a diverged
    member, whose non-finite gradient must not reach its state's arithmetic as NaN * 0), and
    their update direction as zero, so their weights stay exactly as they were (an inf in a
    momentum buffer times a zero learning rate would be NaN).

    A step reads nothing back from the device and builds no tensor from host values: the
    per-member hyperparameters live on the device as tensors, built at the first step and
    again only when a group's values (host floats: comparing them costs no device read) or
    ``frozen`` change.
    """

    def __init__(self, params: Iterable[nn.Parameter], members: int, **hparams: Any) -> None:
        for key, values in hparams.items():
            if isinstance(values, list) and len(values) != members:
                raise ValueError(f"{key} needs one value per member ({members}), got {values}")
        super().__init__(list(params), hparams)
        self.members = members
        self.frozen: Tensor | None = None
        # Per param group: the host values its constants were built from, and per parameter
        # the constants on its device and dtype.
        self._built: dict[int, tuple[dict[str, Any], Tensor | None, dict[Tensor, Any]]] = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._built.clear()

    def _constants(self, index: int, group: dict[str, Any]) -> dict[Tensor, _Constants]:
        """Per parameter of ``group``, its per-member constants (rebuilt only on a change)."""
        built = self._built.get(index)
        if (
            built is None
            or built[1] is not self.frozen
            or any(group[k] != v for k, v in built[0].items())
        ):
            values = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            per_kind: dict[tuple[torch.device, torch.dtype], _Constants] = {}
            for p in group["params"]:
                kind = (p.device, p.dtype)
                if kind not in per_kind:
                    frozen = None if self.frozen is None else self.frozen.to(p.device)
                    per_kind[kind] = _Constants(self._build(group, frozen, p.device, p.dtype))
            constants = {p: per_kind[(p.device, p.dtype)] for p in group["params"]}
            built = self._built[index] = (values, self.frozen, constants)
        return built[2]

    def _build(
        self, group: dict[str, Any], frozen: Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    @staticmethod
    def _grad(p: Tensor, c: dict[str, Tensor]) -> Tensor:
        g = p.grad
        return g if "frozen" not in c else torch.where(c["frozen"], 0.0, g)

    @staticmethod
    def _direction(d: Tensor, c: dict[str, Tensor]) -> Tensor:
        return d if "frozen" not in c else torch.where(c["frozen"], 0.0, d)


def _tensor(values: Sequence[float], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _host_float64(device: torch.device) -> torch.device:
    """Where float64 scalars of ``device`` are computed: on it, unless it has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


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

    def _build(
        self, group: dict[str, Any], frozen: Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        momentum, wd = group["momentum"], group["weight_decay"]
        # A member without momentum keeps no buffer in torch: its "buffer" is the
        # gradient itself (momentum 0, dampening 0 make buf = g exactly).
        damp = [d if m != 0 else 0.0 for d, m in zip(group["dampening"], momentum, strict=True)]
        out = {"neg_lr": _tensor([-lr for lr in group["lr"]], device, dtype)}
        if any(wd):
            out["wd"] = _tensor(wd, device, dtype)
        if any(momentum):
            out["momentum"] = _tensor(momentum, device, dtype)
            out["one_minus_damp"] = _tensor([1 - d for d in damp], device, dtype)
        if frozen is not None:
            out["frozen"] = frozen
            out["neg_lr"] = out["neg_lr"].masked_fill(frozen, -0.0)  # -lr at lr = 0
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for index, group in enumerate(self.param_groups):
            constants = self._constants(index, group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                c = constants[p].of(p)
                g = self._grad(p, c)
                if "wd" in c:
                    g = g + c["wd"] * p
                if "momentum" in c:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.clone()
                    else:
                        buf.mul_(c["momentum"]).add_(g * c["one_minus_damp"])
                    g = g + c["momentum"] * buf if group["nesterov"] else buf
                p.addcmul_(self._direction(g, c), c["neg_lr"])
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
        # Per parameter, its step count as a host number (torch's state["step"] is a tensor
        # that torch reads back every step): read from the state once, then counted here.
        self._steps: dict[Tensor, float] = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._steps.clear()

    def _build(
        self, group: dict[str, Any], frozen: Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        lrs, wd = group["lr"], group["weight_decay"]
        beta1 = [b[0] for b in group["betas"]]
        beta2 = [b[1] for b in group["betas"]]
        # torch computes the bias corrections in Python floats (double): so do these, on the
        # device; the results are written into the float32 step_size and bc2_sqrt each step.
        f64 = _host_float64(device)
        out = {
            "one_minus_beta1": _tensor([1 - b for b in beta1], device, dtype),
            "beta2": _tensor(beta2, device, dtype),
            "one_minus_beta2": _tensor([1 - b for b in beta2], device, dtype),
            "eps": _tensor(group["eps"], device, dtype),
            "beta1_64": _tensor(beta1, f64, torch.float64),
            "beta2_64": _tensor(beta2, f64, torch.float64),
            "neg_lr_64": _tensor([-lr for lr in lrs], f64, torch.float64),
            "step_size": torch.empty(len(lrs), dtype=dtype, device=device),
            "bc2_sqrt": torch.empty(len(lrs), dtype=dtype, device=device),
        }
        if frozen is not None:
            out["frozen"] = frozen
            out["neg_lr_64"] = out["neg_lr_64"].masked_fill(frozen.to(f64), -0.0)  # -lr at lr = 0
        if any(wd):
            if group["decoupled"]:
                lr_64 = -out["neg_lr_64"]
                out["decay"] = (1 - lr_64 * _tensor(wd, f64, torch.float64)).to(device, dtype)
            else:
                out["wd"] = _tensor(wd, device, dtype)
        return out

    @staticmethod
    def _bias_corrections(constants: _Constants, step: float) -> None:
        """``step_size`` = -lr / (1 - beta1 ** step) and ``bc2_sqrt`` = (1 - beta2 ** step) **
        0.5, as torch computes them (in double), for every member at once."""
        if constants.step == step:
            return
        constants.step = step
        c = constants.base
        bc1 = torch.pow(c["beta1_64"], step).neg_().add_(1)
        c["step_size"].copy_(c["neg_lr_64"] / bc1)
        c["bc2_sqrt"].copy_(torch.pow(c["beta2_64"], step).neg_().add_(1).sqrt_())

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = closure() if closure is not None else None
        for index, group in enumerate(self.param_groups):
            constants = self._constants(index, group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                c = constants[p].of(p)
                g = self._grad(p, c)
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    self._steps[p] = 0.0
                elif p not in self._steps:  # a loaded state: its count, read once
                    self._steps[p] = float(state["step"])
                state["step"] += 1
                step = self._steps[p] = self._steps[p] + 1
                if "decay" in c:
                    p.mul_(c["decay"])
                elif "wd" in c:
                    g = g + c["wd"] * p
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(g, c["one_minus_beta1"])
                exp_avg_sq.mul_(c["beta2"]).addcmul_(g * c["one_minus_beta2"], g)
                self._bias_corrections(constants[p], step)
                denom = exp_avg_sq.sqrt().div_(c["bc2_sqrt"]).add_(c["eps"])
                p.addcmul_(self._direction(exp_avg / denom, c), c["step_size"])
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
