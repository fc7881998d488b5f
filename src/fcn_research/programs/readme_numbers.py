"""The README's numbers, generated: every block of numbers in README.md sits between

    <!-- generated NAME by: COMMAND; COMMAND -->
    ...
    <!-- end generated NAME -->

and is what those commands (shown to the reader just above the block) print or write, run
here through the real CLI. ``--run`` re-runs them and rewrites the blocks; ``--check`` re-runs
them and lists the blocks that differ. Benchmark timings depend on the machine: they sit
between ``<!-- measured, not checked: COMMAND -->`` and ``<!-- end measured -->`` instead.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fcn_research.programs.doc_commands import ROOT, SWEEP, run_shown
from fcn_research.programs.experiments import Result, group, load, values

README = ROOT / "README.md"
BLOCK = re.compile(
    r"^<!-- generated (?P<name>\w+) by: (?P<commands>.*?) -->\n(?P<body>.*?)"
    r"^<!-- end generated (?P=name) -->$",
    re.S | re.M,
)
MEASURED = re.compile(
    r"^<!-- measured, not checked: .*? -->\n.*?^<!-- end measured -->$", re.S | re.M
)


@dataclass(frozen=True)
class Outputs:
    """What a block's commands left: each command's stdout and each sweep's dir, in order."""

    stdout: list[str]
    sweeps: list[Path]


@dataclass(frozen=True)
class Block:
    """A README block: the commands that produce it and how their outputs read as markdown."""

    name: str
    commands: tuple[str, ...]
    render: Callable[[Outputs], list[str]]

    def marker(self) -> str:
        """The opening marker line, which names the commands."""
        return f"<!-- generated {self.name} by: {'; '.join(self.commands)} -->"

    def run(self, workdir: Path) -> str:
        """Run the commands with their outputs under ``workdir``; the block's text."""
        out = Outputs([], [])
        for command in self.commands:
            if command.startswith("python train.py -m"):
                out.sweeps.append(workdir / self.name / str(len(out.sweeps)))
            sweep = out.sweeps[-1] if out.sweeps else workdir / self.name
            out.stdout.append(run_shown(command, sweep, workdir))
        return "\n".join(self.render(out)) + "\n"


# ---- reading what the commands wrote


def md_table(markdown: str, *headings: str) -> list[str]:
    """The first markdown table after ``headings`` (each found after the one before it)."""
    text, at = "\n" + markdown, 0
    for heading in headings:
        at = text.index(f"\n{heading}\n", at) + len(heading) + 2
    lines = text[at:].split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def rich_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of a rich table printed to ``stdout``, by their first cell."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def pct(x: float) -> str:
    """A fraction as a whole percentage."""
    return f"{100 * x:.0f} %"


def pct_range(xs: Sequence[float]) -> str:
    """``a-b %`` over seeds (one number where they agree to the percent)."""
    lo, hi = f"{100 * min(xs):.0f}", f"{100 * max(xs):.0f}"
    return f"{lo} %" if lo == hi else f"{lo}-{hi} %"


def ratio_range(xs: Sequence[float]) -> str:
    """``a to b`` over seeds, one significant digit (orders of magnitude)."""
    return f"{min(xs):.1g} to {max(xs):.1g}"


# ---- the blocks


REPORT_SWEEP = (
    "python train.py -m activation=relu,tanh,sigmoid depth=2,4,8 seed=0,1,2 max_epochs=10"
)


def report_example(out: Outputs) -> list[str]:
    """The report's val/acc and low-gradient pivots and the baseline comparison, then what
    they say."""
    report = out.sweeps[0] / "report"
    summary = (report / "summary.md").read_text()
    with (report / "comparisons.csv").open() as f:
        compared = {(r["configuration"]): r for r in csv.DictReader(f) if r["metric"] == "val/acc"}
    cells = group(load(out.sweeps[0]), "activation", "depth")

    def final(activation: str, depth: int, key: str) -> list[float]:
        return values(cells[(activation, str(depth))], key)

    def versus(activation: str, depth: int) -> dict[str, str]:
        return compared[f"activation={activation}, depth={depth}"]

    apart = [d for d in (2, 4, 8) if versus("tanh", d)["verdict"].startswith("not distinguishable")]
    sig4 = [
        s - r
        for s, r in zip(final("sigmoid", 4, "val/acc"), final("relu", 4, "val/acc"), strict=True)
    ]
    sig_dead = [x for d in (2, 4, 8) for x in final("sigmoid", d, "neurons/dead_fraction")]
    low = "neurons/low_gradient_fraction"
    sig_low, relu_low = (statistics.mean(final(a, 8, low)) for a in ("sigmoid", "relu"))
    ratio = "grad_norm/ratio_first_last"
    init = {a: values(cells[(a, "8")], ratio, "init") for a in ("sigmoid", "relu", "tanh")}
    power = " ".join(
        f"depth {d}'s (d_z = {float(versus('tanh', d)['effect']):.2g}) about "
        f"{versus('tanh', d)['seeds_for_80pct_power']}" + (";" if i < len(apart) - 1 else ".")
        for i, d in enumerate(apart)
    )
    return [
        "val/acc (`summary.md`):",
        "",
        *md_table(summary, "## val/acc"),
        "",
        "val/acc against the baseline (`summary.md`, *Compared with activation=relu*):",
        "",
        *md_table(summary, "## Compared with activation=relu", "### val/acc"),
        "",
        f"{low} (`summary.md`):",
        "",
        *md_table(summary, f"## {low}"),
        "",
        f"With 3 seeds, tanh and ReLU are not distinguishable at depth "
        f"{' and '.join(map(str, apart)) or 'none'}; the power column says how many seeds a "
        f"difference of the observed size would need: {power} "
        f"sigmoid's accuracies at depth 4 sit {-statistics.mean(sig4):.3f} below ReLU's"
        f"{' in every seed' if max(sig4) < 0 else ''} "
        f"(p = {float(versus('sigmoid', 4)['p']):.1g}). The neuron tables read together: "
        f"ReLU's dead fraction goes from {pct_range(final('relu', 2, 'neurons/dead_fraction'))} "
        f"of hidden units at depth 2 to {pct_range(final('relu', 8, 'neurons/dead_fraction'))} "
        f"at depth 8 (`neurons/dead_fraction`), while sigmoid has "
        + ("no dead unit anywhere" if max(sig_dead) == 0 else f"{pct_range(sig_dead)} dead")
        + f" yet {pct(sig_low)} of its units at depth 8 pass less than 0.05 of the gradient on "
        f"average, {'more' if sig_low > relu_low else 'fewer'} than ReLU's {pct(relu_low)}. "
        "`grad_norm_init.png` shows the vanishing gradient at initialization: at depth 8 with "
        f"sigmoid, layer 1's gradient norm is {ratio_range(init['sigmoid'])} of layer 8's "
        f"(seeds 0-2), against {ratio_range(init['relu'])} for ReLU and "
        f"{ratio_range(init['tanh'])} for tanh (the `init:` columns of `summary.csv`).",
    ]


THEORY = (
    (
        "digits, tanh, variance_scaling σ_w² = 1.76, σ_b² = 0.05 (critical), depth 10, width 512",
        "python scripts/inspect_init.py data=digits activation=tanh initializer=variance_scaling "
        "initializer.sigma_w2=1.76 initializer.sigma_b2=0.05 depth=10 width=512",
    ),
    (
        "digits, relu, kaiming_normal (σ_w² = 2), depth 10, width 512",
        "python scripts/inspect_init.py data=digits activation=relu initializer=kaiming_normal "
        "depth=10 width=512",
    ),
    (
        "moons, tanh, default init (σ_w² = 1/3), depth 7, width 32",
        "python scripts/inspect_init.py activation=tanh depth=7",
    ),
)


def theory_table(out: Outputs) -> list[str]:
    """inspect_init's measured and predicted activation std (layers 1, 5, 9) and gradient ratio."""
    lines = [
        "| configuration | layer 1 / 5 / 9 act std, measured (theory) "
        "| grad_norm/ratio_first_last, measured (theory) |",
        "|---|---|---|",
    ]
    for (label, _), stdout in zip(THEORY, out.stdout, strict=True):
        rows = rich_rows(stdout)
        # Columns: grad norm, grad / last, theory, dead, saturated, act mean, act std, theory.
        stds = [
            f"{rows[f'{i:02d}'][6]} ({rows[f'{i:02d}'][7]})" if f"{i:02d}" in rows else "–"
            for i in (1, 5, 9)
        ]
        std_text = " / ".join("–" if s.startswith("–") else s for s in stds)
        lines.append(f"| {label} | {std_text} | {rows['01'][1]} ({rows['01'][2]}) |")
    return lines


MNIST1D = (
    "python train.py -m experiment=mnist1d_baselines",
    "python train.py -m experiment=mnist1d_baselines depth=3 width=100 "
    "data.val_fraction=0 max_epochs=160",
)
PUBLISHED = {"1": "32 %", "2": "–", "3": "68 %"}


def _acc(results: list[Result], key: str = "test/acc") -> str:
    xs = [100 * x for x in values(results, key)]
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f} % ({min(xs):.1f}-{max(xs):.1f})"


def mnist1d(out: Outputs) -> list[str]:
    """test/acc per depth and width over seeds, the all-training-samples run, and the gaps."""
    cells = group(load(out.sweeps[0]), "depth", "width")
    full = load(out.sweeps[1])
    names = {"1": "logistic regression (depth 1)", "2": "MLP, 1 hidden layer (depth 2)"}
    names["3"] = "MLP, 2 hidden layers (depth 3)"
    lines = [
        "| test/acc, mean ± sd (range) | ours: width 100 | ours: width 256 "
        "| published (MNIST-1D README) |",
        "|---|---|---|---|",
    ]
    for depth, name in names.items():
        wide = "(same network)" if depth == "1" else _acc(cells[(depth, "256")])
        lines.append(f"| {name} | {_acc(cells[(depth, '100')])} | {wide} | {PUBLISHED[depth]} |")
    lines.append(
        "| MLP, depth 3, width 100, all 4000 train samples "
        f"(`data.val_fraction=0 max_epochs=160`) | {_acc(full)} | | 68 % |"
    )
    mean = {k: statistics.mean(values(v, "test/acc")) for k, v in cells.items()}
    gaps = [100 * (m - mean[("1", "100")]) for (d, _), m in mean.items() if d != "1"]
    train = [x for (d, _), rs in cells.items() if d != "1" for x in values(rs, "train/acc")]
    best = max(values(cells[("3", "100")] + full, "test/acc"))
    return [
        *lines,
        "",
        f"Depth 3, width 100: {68 - 100 * mean[('3', '100')]:.1f} points below the published "
        f"68 % at the experiment's defaults, "
        f"{68 - 100 * statistics.mean(values(full, 'test/acc')):.1f} with all 4000 training "
        f"samples; its best seed {100 * best:.1f} %. The MLPs beat logistic regression by "
        f"{min(gaps):.0f}-{max(gaps):.0f} points; their final train/acc: "
        + (
            f"{100 * min(train):.1f}"
            if min(train) == max(train)
            else f"{100 * min(train):.1f}-{100 * max(train):.1f}"
        )
        + " %.",
    ]


LR_SEARCH = (
    "python train.py -m hparams_search=lr activation=relu,tanh,sigmoid depth=3,5 max_epochs=10 "
    "hydra.sweeper.n_trials=6 'hydra.sweeper.seeds=[0,1,2]'",
    f"python scripts/report.py {SWEEP}",
)


def lr_search(out: Outputs) -> list[str]:
    """best_lr.md's table, then the report's val/acc at those learning rates."""
    best = (out.sweeps[0] / "best_lr.md").read_text()
    summary = (out.sweeps[0] / "report" / "summary.md").read_text()
    return [
        "`best_lr.md`:",
        "",
        *md_table(best, "# Learning rate tuned per cell"),
        "",
        "`scripts/report.py`, each cell at its best lr (`summary.md`):",
        "",
        *md_table(summary, "## val/acc"),
    ]


TOUR = "python train.py -m activation=relu,tanh depth=3,5,7"


def tour(out: Outputs) -> list[str]:
    """Seed 0's step-0 gradients per layer and dead fractions, per job of the quick start."""
    lines = [
        "| activation | depth | `grad_rms/layer_XX` at step 0, layer 1 … depth "
        "| `grad_rms/ratio_hidden` at step 0 | `neurons/dead_fraction` at step 0 → end "
        "| `neurons/dead_fraction/layer_XX` at step 0 |",
        "|---|---|---|---|---|---|",
    ]
    for (activation, depth), (r,) in sorted(
        group(load(out.sweeps[0]), "activation", "depth").items(),
        key=lambda kv: (kv[0][0], int(kv[0][1])),
    ):
        n = int(depth)
        rms = " / ".join(f"{r['init'][f'grad_rms/layer_{i:02d}']:.2g}" for i in range(1, n + 1))
        hidden = r["init"].get("grad_rms/ratio_hidden")
        dead = " / ".join(
            pct(r["init"][f"neurons/dead_fraction/layer_{i:02d}"]) for i in range(1, n)
        )
        lines.append(
            f"| {activation} | {depth} | {rms} | {'–' if hidden is None else f'{hidden:.2g}'} "
            f"| {pct(r['init']['neurons/dead_fraction'])} → "
            f"{pct(r['metrics']['neurons/dead_fraction'])} | {dead} |"
        )
    return lines


BLOCKS = (
    Block("tour", (TOUR,), tour),
    Block("mnist1d", MNIST1D, mnist1d),
    Block(
        "report_example",
        (REPORT_SWEEP, f"python scripts/report.py {SWEEP} --baseline activation=relu"),
        report_example,
    ),
    Block("lr_search", LR_SEARCH, lr_search),
    Block("theory", tuple(command for _, command in THEORY), theory_table),
)
BY_NAME = {b.name: b for b in BLOCKS}


# ---- README blocks


def blocks_of(text: str) -> dict[str, str]:
    """The README's generated blocks: name -> body."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def markers_of(text: str) -> dict[str, tuple[str, ...]]:
    """The README's generated blocks: name -> the commands its marker names."""
    return {m["name"]: tuple(m["commands"].split("; ")) for m in BLOCK.finditer(text)}


def replace_blocks(text: str, fresh: dict[str, str]) -> str:
    """``text`` with the bodies of the blocks named in ``fresh`` replaced (markers rewritten)."""

    def sub(m: re.Match[str]) -> str:
        if m["name"] not in fresh:
            return m[0]
        block = BY_NAME[m["name"]]
        return f"{block.marker()}\n{fresh[m['name']]}<!-- end generated {block.name} -->"

    return BLOCK.sub(sub, text)


def differences(text: str, fresh: dict[str, str]) -> dict[str, str]:
    """The blocks of ``text`` whose body differs from ``fresh``: name -> a unified diff."""
    written = blocks_of(text)
    diffs = {}
    for name, body in fresh.items():
        if written.get(name) != body:
            diff = difflib.unified_diff(
                (written.get(name) or "").splitlines(),
                body.splitlines(),
                "README.md",
                "regenerated",
                lineterm="",
            )
            diffs[name] = "\n".join(diff)
    return diffs


def regenerate(names: Sequence[str], workdir: Path) -> dict[str, str]:
    """Run the named blocks' commands under ``workdir``; name -> fresh body."""
    fresh = {}
    for name in names:
        print(f"readme_numbers: {name}: {'; '.join(BY_NAME[name].commands)}", file=sys.stderr)
        fresh[name] = BY_NAME[name].run(workdir)
    return fresh


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temp file and a rename."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    Path(f.name).replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python scripts/readme_numbers.py --run|--check [--only NAME ...] [--workdir DIR]``."""
    parser = argparse.ArgumentParser(prog="readme_numbers", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", action="store_true", help="re-run the commands, rewrite the blocks")
    mode.add_argument("--check", action="store_true", help="re-run them, list blocks that differ")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the commands write (default: a temp dir, removed after); a dir kept from "
        "an earlier run is resumed: its completed jobs are not trained again",
    )
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="readme_numbers_") as tmp:
        fresh = regenerate(args.only, (args.workdir or Path(tmp)).resolve())
    text = args.readme.read_text()
    missing = [name for name in fresh if name not in blocks_of(text)]
    if missing:
        print(f"readme_numbers: error: {args.readme} has no block {missing}", file=sys.stderr)
        return 2
    if args.run:
        write_text_atomic(args.readme, replace_blocks(text, fresh))
        print(f"wrote {len(fresh)} blocks of {args.readme}")
        return 0
    diffs = differences(text, fresh)
    for name, diff in diffs.items():
        print(f"block {name} differs from what its commands give:\n{diff}\n")
    print(f"{len(fresh) - len(diffs)} of {len(fresh)} blocks as generated")
    return 1 if diffs else 0
