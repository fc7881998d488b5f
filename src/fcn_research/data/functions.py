"""1-D function regression, for universal approximation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from hydra.utils import get_method
from torch import Tensor

from fcn_research.data.base import InMemoryDataModule

TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "sin": torch.sin,
    "wiggly": lambda x: torch.sin(3 * x) + 0.5 * torch.cos(7 * x) + 0.3 * x,
    "abs": torch.abs,
    "step": lambda x: (x > 0).float(),
    "gauss_bump": lambda x: torch.exp(-(x**2) * 4),
}


class Function1D(InMemoryDataModule):
    """Samples of ``y = target(x)`` (+ Gaussian noise) for x uniform in [low, high].

    ``target`` is a name from ``TARGETS`` or a dotted path to a function of a tensor
    (``mypackage.fns.my_target``). Inputs are standardised; targets keep their units, so
    ``val/mse`` reads in the function's own scale.
    """

    task = "regression"
    num_classes = 1

    def __init__(
        self,
        target: str = "wiggly",
        num_samples: int = 1000,
        low: float = -math.pi,
        high: float = math.pi,
        noise: float = 0.0,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
        min_batches_per_epoch: int = 1,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(
            batch_size, val_fraction, seed, min_batches_per_epoch, test_fraction=test_fraction
        )
        if not low < high:
            raise ValueError(f"need low < high, got low={low}, high={high}")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        self.fn = self._resolve(target)
        self.target = target
        self.num_samples, self.low, self.high, self.noise = num_samples, low, high, noise

    @staticmethod
    def _resolve(target: str) -> Callable[[Tensor], Tensor]:
        if target in TARGETS:
            return TARGETS[target]
        if "." in target:
            return get_method(target)
        raise ValueError(
            f"unknown target function {target!r}; choose one of {sorted(TARGETS)} "
            "or give a dotted path to a function of a tensor"
        )

    @property
    def name(self) -> str:
        return f"function_{self.target.rsplit('.', 1)[-1]}"

    def generate(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        x = torch.rand(self.num_samples, 1, generator=g) * (self.high - self.low) + self.low
        y = self.fn(x).squeeze(1)
        y = y + torch.randn(y.shape, generator=g) * self.noise
        return x.float(), y.float()
