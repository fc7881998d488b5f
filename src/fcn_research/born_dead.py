"""Born-dead ReLU networks: the fraction of randomly initialized narrow deep ReLU networks
that compute a constant function on the input domain (Lu et al. 2019, "Dying ReLU and
Initialization"), next to the single-input probability 1 - (1 - 2^-N)^(L-1).

Weights are He-normal (N(0, 2 / fan_in), symmetric) and biases zero, as
``initializer=kaiming_normal``. For one input x != 0 each unit of a hidden layer is off with
probability 1/2 independently (its weights are symmetric and independent of the layer's
input), so the layer is all off with probability 2^-N, and then every later layer is too:
the network is dead at x with probability exactly 1 - (1 - 2^-N)^(L-1). Without biases the
network is positively homogeneous, so it is constant on a domain around 0 only if it is zero
there, i.e. dead at every point: the domain fraction is at most the single-input one.

No Lightning: every cell's ``inits`` networks run as one batched matrix product per layer.
``python -m fcn_research.born_dead [widths=[2,3] depths=[2,10] inits=1000 ...]``
(``conf/born_dead.yaml``) prints the table; under a minute on one CPU core.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from fcn_research.run_dirs import CONF_DIR


def single_input_probability(width: int, depth: int) -> float:
    """1 - (1 - 2^-N)^(L-1): a width-N, depth-L ReLU network is dead at one given input."""
    return 1.0 - (1.0 - 2.0**-width) ** (depth - 1)


@dataclass(frozen=True)
class Cell:
    """One (width, depth): the fractions of ``inits`` networks dead on the whole domain and
    dead at one input, beside the single-input probability."""

    width: int
    depth: int
    inits: int
    domain: float
    single: float
    predicted: float

    @property
    def sd(self) -> float:
        """The binomial standard deviation of ``single`` around ``predicted``."""
        return math.sqrt(max(self.predicted * (1 - self.predicted), 1e-12) / self.inits)


def domain_grid(in_features: int, points: int) -> torch.Tensor:
    """``points^in_features`` points of a regular grid on [-1, 1]^in_features."""
    axis = torch.linspace(-1.0, 1.0, points)
    mesh = torch.meshgrid(*([axis] * in_features), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


def dead_fractions(
    width: int, depth: int, inits: int, x: torch.Tensor, generator: torch.Generator
) -> tuple[float, float]:
    """(constant on all of ``x``, dead at ``x[-1]``) over ``inits`` He-normal ReLU networks."""
    h = x.expand(inits, *x.shape)  # (inits, points, features)
    for _ in range(depth - 1):
        fan_in = h.shape[-1]
        w = torch.randn(inits, fan_in, width, generator=generator) * math.sqrt(2.0 / fan_in)
        h = torch.relu(torch.bmm(h, w))
    # The output Linear is affine in h: constant h over the domain is a constant network.
    constant = (h == h[:, :1]).all(dim=2).all(dim=1)
    dead_at_one = (h[:, -1] == 0).all(dim=1)
    return constant.double().mean().item(), dead_at_one.double().mean().item()


def born_dead(cfg: DictConfig) -> list[Cell]:
    """Every (width, depth) cell of ``cfg`` (``conf/born_dead.yaml``)."""
    for key in ("widths", "depths"):
        bad = [v for v in cfg[key] if not isinstance(v, int) or v < (1 if key == "widths" else 2)]
        if bad:
            raise ValueError(
                f"born_dead: {key} must be integers >= {1 if key == 'widths' else 2}, got {bad}"
            )
    if cfg.inits < 1:
        raise ValueError(f"born_dead: inits must be >= 1, got {cfg.inits}")
    generator = torch.Generator().manual_seed(int(cfg.seed))
    x = domain_grid(int(cfg.in_features), int(cfg.grid))
    cells = []
    for width in cfg.widths:
        for depth in cfg.depths:
            domain, single = dead_fractions(width, depth, int(cfg.inits), x, generator)
            predicted = single_input_probability(width, depth)
            cells.append(Cell(width, depth, int(cfg.inits), domain, single, predicted))
    return cells


def table(cells: Sequence[Cell]) -> list[str]:
    """Markdown: per width a row, per depth a cell ``domain / single / 1-(1-2^-N)^(L-1)``."""
    depths = sorted({c.depth for c in cells})
    lines = [
        "| N \\ L | " + " | ".join(str(d) for d in depths) + " |",
        "|---" * (len(depths) + 1) + "|",
    ]
    for width in sorted({c.width for c in cells}):
        row = {c.depth: c for c in cells if c.width == width}
        lines.append(
            f"| {width} | "
            + " | ".join(
                f"{row[d].domain:.3f} / {row[d].single:.3f} / {row[d].predicted:.3f}"
                for d in depths
            )
            + " |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcn_research.born_dead [overrides]``: print the table and the checks."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="born_dead"):
        cfg = compose("born_dead", overrides=overrides)
    torch.set_num_threads(1)
    start = time.perf_counter()
    cells = born_dead(cfg)
    seconds = time.perf_counter() - start
    worst = max(cells, key=lambda c: abs(c.single - c.predicted) / c.sd)
    print(
        f"Born-dead ReLU networks: {cfg.inits} He-normal initializations per cell, domain "
        f"[-1, 1]^{cfg.in_features} on a {cfg.grid}^{cfg.in_features} grid ({seconds:.1f} s)."
    )
    print("Cell: constant on the domain / dead at one input / 1 - (1 - 2^-N)^(L-1).")
    print()
    print("\n".join(table(cells)))
    print()
    print(
        "dead at one input vs 1 - (1 - 2^-N)^(L-1): largest gap "
        f"{abs(worst.single - worst.predicted):.3f} = "
        f"{abs(worst.single - worst.predicted) / worst.sd:.1f} binomial sd (N={worst.width}, "
        f"L={worst.depth})"
    )
    above = [c for c in cells if c.domain > c.single]
    print(
        "constant on the domain <= dead at one input: "
        + ("holds in every cell" if not above else f"fails in {len(above)} cells")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
