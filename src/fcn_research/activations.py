"""Activation modules that torch lacks.

Every activation is an ``nn.Module``. An activation that pools ``k`` inputs into one
output declares it with a ``pool_size`` attribute; the MLP reads it to widen the
Linear before the activation. Elementwise activations need no attribute.
"""

from __future__ import annotations

import torch
from torch import nn


class ZeroCentredSigmoid(nn.Module):
    """sigmoid(x) - 1/2: the sigmoid's saturation without its non-zero mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) - 0.5


class Maxout(nn.Module):
    """Maxout (Goodfellow et al., 2013): the max over ``pool_size`` linear pieces per unit."""

    def __init__(self, pool_size: int = 2) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"Maxout pool_size must be >= 1, got {pool_size}")
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Units are stored as consecutive groups of `pool_size` pieces.
        return x.unflatten(-1, (-1, self.pool_size)).amax(dim=-1)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


class LearnableSwish(nn.Module):
    """Swish with a learnable slope (Ramachandran et al., 2017): x * sigmoid(beta * x).

    ``beta`` is one trained scalar per layer: 1 is SiLU, 0 is x / 2, large beta nears ReLU.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)
