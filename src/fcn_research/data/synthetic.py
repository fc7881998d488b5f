"""2-D classification sets in the style of TensorFlow Playground, plus the notebook's XOR table."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from fcn_research.data.base import InMemoryDataModule

Shape = Literal["xor", "circle", "gauss", "spiral", "moons"]
SHAPES: tuple[str, ...] = ("xor", "circle", "gauss", "spiral", "moons")


class Playground2D(InMemoryDataModule):
    """Binary 2-D points: xor, circle, gauss, spiral (TensorFlow Playground's) or moons.

    ``noise`` is in the units of each generator, as in the Playground: a fraction (0..1)
    of the radius for circle/spiral/xor, a scale of the cluster spread for gauss, and
    scikit-learn's Gaussian ``noise`` for moons.
    """

    task = "binary"
    num_classes = 2

    def __init__(
        self,
        shape: Shape = "moons",
        num_samples: int = 1000,
        noise: float = 0.1,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
        min_batches_per_epoch: int = 1,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(
            batch_size, val_fraction, seed, min_batches_per_epoch, test_fraction=test_fraction
        )
        if shape not in SHAPES:
            raise ValueError(f"unknown 2-D shape {shape!r}; choose one of {list(SHAPES)}")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.shape = shape
        self.num_samples = num_samples
        self.noise = noise

    @property
    def name(self) -> str:
        return self.shape

    def generate(self) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(self.seed)
        x, y = getattr(self, f"_{self.shape}")(self.num_samples, g)
        return x.float(), y.float()

    def _xor(self, n: int, g: Tensor) -> tuple[Tensor, Tensor]:
        # Uniform on [-5, 5]^2, pushed 0.3 away from the axes so the classes touch less.
        p = torch.rand(n, 2, generator=g) * 10 - 5
        p = p + torch.sign(p) * 0.3
        label = (p[:, 0] * p[:, 1] >= 0).float()
        p = p + torch.randn(n, 2, generator=g) * self.noise * 5
        return p, label

    def _circle(self, n: int, g: Tensor) -> tuple[Tensor, Tensor]:
        radius = 5.0
        n_in = n // 2
        r = (
            torch.cat(
                [torch.rand(n_in, generator=g) * 0.5, 0.7 + torch.rand(n - n_in, generator=g) * 0.3]
            )
            * radius
        )
        angle = torch.rand(n, generator=g) * 2 * math.pi
        p = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1)
        p = p + torch.randn(n, 2, generator=g) * self.noise * radius
        label = torch.cat([torch.ones(n_in), torch.zeros(n - n_in)])
        return p, label

    def _gauss(self, n: int, g: Tensor) -> tuple[Tensor, Tensor]:
        n_pos = n // 2
        spread = 0.5 + 3.5 * self.noise
        pos = torch.randn(n_pos, 2, generator=g) * spread + 2
        neg = torch.randn(n - n_pos, 2, generator=g) * spread - 2
        return torch.cat([pos, neg]), torch.cat([torch.ones(n_pos), torch.zeros(n - n_pos)])

    def _spiral(self, n: int, g: Tensor) -> tuple[Tensor, Tensor]:
        n_pos = n // 2
        parts, labels = [], []
        for count, delta, label in ((n_pos, 0.0, 1.0), (n - n_pos, math.pi, 0.0)):
            t = torch.rand(count, generator=g)
            r = t * 5
            angle = 1.75 * t * 2 * math.pi + delta
            p = torch.stack([r * torch.sin(angle), r * torch.cos(angle)], 1)
            parts.append(p + torch.randn(count, 2, generator=g) * self.noise * 5)
            labels.append(torch.full((count,), label))
        return torch.cat(parts), torch.cat(labels)

    def _moons(self, n: int, g: Tensor) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import make_moons

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        x, y = make_moons(n_samples=n, noise=self.noise, random_state=seed)
        return torch.from_numpy(x), torch.from_numpy(y)


class XorTable(InMemoryDataModule):
    """The notebook's XOR: the four points of the truth table, full batch, validated on itself."""

    task = "binary"
    num_classes = 2

    def __init__(self, batch_size: int = 4, seed: int = 0, min_batches_per_epoch: int = 1) -> None:
        # Four points: nothing to hold out (validated on itself, no test split).
        super().__init__(
            batch_size, 0.0, seed, min_batches_per_epoch, standardize=False, test_fraction=0.0
        )

    @property
    def name(self) -> str:
        return "xor_table"

    def generate(self) -> tuple[Tensor, Tensor]:
        x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        return x, torch.tensor([0.0, 1.0, 1.0, 0.0])
