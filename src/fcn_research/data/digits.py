"""scikit-learn's bundled 8x8 digits: 1797 images, 64 features, 10 classes (no download)."""

from __future__ import annotations

import torch
from torch import Tensor

from fcn_research.data.base import InMemoryDataModule


class Digits(InMemoryDataModule):
    """The UCI handwritten digits that ship inside scikit-learn, as flat 64-pixel vectors."""

    task = "multiclass"
    num_classes = 10

    @property
    def name(self) -> str:
        return "digits"

    def generate(self) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return torch.from_numpy(x).float(), torch.from_numpy(y).long()
