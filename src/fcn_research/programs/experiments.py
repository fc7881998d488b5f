"""The lesson's experiments as numbers: run their sweeps over seeds, read the jobs'
result.json files and write each experiment's claims with the numbers behind them
(``docs/experiments.md``). Every number and every verdict on that page comes from here:
the experiments and their commands here, their claims in ``experiment_summaries``, the
reading, formatting and statistics (the report's) in ``experiment_page``.

A claim over seeds is written as mean ± sd with the range and n; a threshold claim says
whether it held on every seed; two settings are compared by the report's test (paired t
over the seeds, else Welch's), and the verdict names the test and its p-value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fcn_research.programs.doc_commands import ROOT, run_sweep
from fcn_research.programs.experiment_page import COMPARISON, Result, group, load, values
from fcn_research.programs.experiment_summaries import (
    activation_zoo,
    depth_without_initializer,
    dying_relu,
    dynamical_isometry,
    edge_of_chaos,
    leaky_relu_rescue,
    maxout,
    pruning,
    selu_self_normalizing,
    universal_approximation,
    vanishing_gradients,
    xor,
    zero_centering,
)
from fcn_research.results import write_atomic

# What programs import from here (readme_numbers reads its sweeps with load, group, values).
__all__ = ["BY_NAME", "EXPERIMENTS", "Result", "group", "load", "main", "section", "values"]

SEEDS = "seed=0,1,2"


@dataclass(frozen=True)
class Experiment:
    """An experiment's sweeps (the overrides after ``python train.py -m``) and its summary."""

    name: str
    sweeps: tuple[tuple[str, ...], ...]
    summarize: Callable[[list[list[Result]]], list[str]]

    def commands(self) -> list[str]:
        """The commands a reader types to reproduce the numbers."""
        return [" ".join(("python train.py -m", *sweep)) for sweep in self.sweeps]


EXPERIMENTS = (
    Experiment("xor", (("experiment=xor", SEEDS),), xor),
    Experiment(
        "vanishing_gradients",
        (
            ("experiment=vanishing_gradients", SEEDS),
            ("experiment=depth_without_initializer", "activation=sigmoid,tanh", "depth=7", SEEDS),
        ),
        vanishing_gradients,
    ),
    Experiment(
        "depth_without_initializer",
        (("experiment=depth_without_initializer", SEEDS),),
        depth_without_initializer,
    ),
    Experiment("dying_relu", (("experiment=dying_relu", SEEDS),), dying_relu),
    Experiment("leaky_relu_rescue", (("experiment=leaky_relu_rescue", SEEDS),), leaky_relu_rescue),
    Experiment(
        "universal_approximation",
        (("experiment=universal_approximation", SEEDS),),
        universal_approximation,
    ),
    Experiment("zero_centering", (("experiment=zero_centering",),), zero_centering),
    Experiment(
        "selu_self_normalizing",
        (("experiment=selu_self_normalizing", SEEDS),),
        selu_self_normalizing,
    ),
    Experiment(
        "maxout",
        (("experiment=maxout",), ("experiment=maxout", "activation=maxout", "width=22")),
        maxout,
    ),
    Experiment("pruning", (("experiment=pruning", SEEDS),), pruning),
    Experiment(
        "activation_zoo",
        (
            ("experiment=activation_zoo",),
            (
                "experiment=activation_zoo",
                "activation=relu,leaky_relu,elu,gelu,silu,softplus,maxout",
                "initializer=kaiming_normal",
            ),
            (
                "experiment=activation_zoo",
                "activation=tanh,sigmoid,zero_centred_sigmoid,identity",
                "initializer=xavier_normal",
            ),
            ("experiment=activation_zoo", "activation=selu", "initializer=lecun_normal"),
            ("experiment=activation_zoo", "activation=maxout", "width=22"),
        ),
        activation_zoo,
    ),
    Experiment("edge_of_chaos", (("experiment=edge_of_chaos",),), edge_of_chaos),
    Experiment(
        "dynamical_isometry",
        (
            ("experiment=dynamical_isometry",),
            (
                "experiment=dynamical_isometry",
                "activation=relu",
                "initializer=variance_scaling",
                "initializer.sigma_w2=2.0",
            ),
        ),
        dynamical_isometry,
    ),
)
BY_NAME = {e.name: e for e in EXPERIMENTS}


def sweep_dir(root: Path, experiment: Experiment, index: int) -> Path:
    """Where sweep ``index`` of ``experiment`` writes its jobs under ``root``."""
    return root / experiment.name / str(index)


def run(experiment: Experiment, root: Path) -> None:
    """Run the experiment's sweeps (through the real CLI) into ``root``."""
    for index, sweep in enumerate(experiment.sweeps):
        run_sweep(sweep, sweep_dir(root, experiment, index), cwd=root)


def section(experiment: Experiment, root: Path) -> list[str]:
    """The experiment's markdown section, from the result.json files under ``root``."""
    sweeps = [load(sweep_dir(root, experiment, i)) for i in range(len(experiment.sweeps))]
    commands = "\n".join(f"    {c}" for c in experiment.commands())
    return [f"## {experiment.name}", "", commands, "", *experiment.summarize(sweeps), ""]


HEADER = [
    "# Experiments: the numbers",
    "",
    "Generated by `python scripts/experiments.py --run <sweeps dir>` from the result.json files",
    "of the commands listed under each experiment (seeds 0, 1, 2 unless the experiment sweeps",
    "seeds itself; 2 CPU cores). Do not edit by hand. Over seeds: mean ± sd [min, max]; n = the",
    "number of seeds.",
    COMPARISON,
    "",
]


def write(root: Path, out: Path, names: Sequence[str] = tuple(BY_NAME)) -> str:
    """Write ``out`` from the sweeps under ``root`` (``<root>/<experiment>/<sweep index>``)."""
    lines = [*HEADER]
    for name in names:
        lines += section(BY_NAME[name], root)
    text = "\n".join(lines)
    write_atomic(out, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """``python scripts/experiments.py [--run] <sweeps dir>``: write docs/experiments.md."""
    parser = argparse.ArgumentParser(prog="experiments", description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, help="holds <experiment>/<sweep index>/ job dirs")
    parser.add_argument("--run", action="store_true", help="run the sweeps first (CPU: ~15 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "experiments.md")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    args = parser.parse_args(argv)
    if args.run:
        for name in args.only:
            run(BY_NAME[name], args.sweeps)
    try:
        write(args.sweeps, args.out, args.only)
    except (FileNotFoundError, ValueError) as err:
        print(f"experiments: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
