"""In-memory datamodules: data lives as tensors on the training device, batched by slicing."""

from fcn_research.data.base import InMemoryDataModule, TensorBatches
from fcn_research.data.digits import Digits
from fcn_research.data.functions import Function1D
from fcn_research.data.mnist import MNIST, FashionMNIST
from fcn_research.data.mnist1d import MNIST1D
from fcn_research.data.synthetic import Playground2D, XorTable

__all__ = [
    "MNIST",
    "MNIST1D",
    "Digits",
    "FashionMNIST",
    "Function1D",
    "InMemoryDataModule",
    "Playground2D",
    "TensorBatches",
    "XorTable",
]
