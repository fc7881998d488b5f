"""The MLP builder."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn


def hidden_widths(width: int | Sequence[int], depth: int) -> list[int]:
    """Expand ``width`` (an int or one int per hidden layer) to ``depth - 1`` hidden widths."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (1 = perceptron), got {depth!r}")
    entries = [width] if isinstance(width, int | float | str) else list(width)
    if not all(isinstance(w, int) and not isinstance(w, bool) for w in entries):
        raise ValueError(
            f"width must be an integer >= 1 or a list of them (one per hidden layer), got {width!r}"
        )
    if isinstance(width, int):
        widths = [width] * (depth - 1)
    else:
        widths = list(entries)
        if len(widths) != depth - 1:
            raise ValueError(
                f"width as a list needs one entry per hidden layer (depth - 1 = {depth - 1}), "
                f"got {len(widths)}: {list(width)}"
            )
    bad = [w for w in ([width] if isinstance(width, int) else widths) if w < 1]
    if bad:
        raise ValueError(f"width must be >= 1 for every hidden layer, got {width!r}")
    return widths


class MLP(nn.Module):
    """A stack of ``depth`` Linear layers with an activation after every hidden one.

    Layers are numbered 1..depth from the input side: ``linears[i - 1]`` is Linear i and
    ``activations[i - 1]`` produces hidden layer i. An activation with a ``pool_size``
    attribute (Maxout) gets a Linear ``pool_size`` times wider before it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int,
        width: int | Sequence[int],
        activation: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        widths = hidden_widths(width, depth)
        self.depth = depth
        self.widths = widths
        self.linears = nn.ModuleList()
        self.activations = nn.ModuleList()
        fan_in = in_features
        for w in widths:
            act = activation()
            if not isinstance(act, nn.Module):
                raise TypeError(
                    f"activation must build an nn.Module, got {type(act).__name__}; "
                    "is the config node missing `_partial_: true`?"
                )
            pool = int(getattr(act, "pool_size", 1))
            self.linears.append(nn.Linear(fan_in, w * pool))
            self.activations.append(act)
            fan_in = w
        self.linears.append(nn.Linear(fan_in, out_features))

    def forward(self, x: Tensor) -> Tensor:
        for linear, act in zip(self.linears, self.activations, strict=False):
            x = act(linear(x))
        return self.linears[-1](x)
