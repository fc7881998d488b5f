"""Template vs a hand-written PyTorch loop: same MLP, same data, same number of optimizer steps.

Three ways, interleaved (plain, template, template without instruments, plain, ...) so
drift of the machine hits all alike; prints median steps/s, spread and ratios per case.
Case (d): stacked members against the plain loop and the basic launcher, per stack size.
Case (e): tiny networks stacked, against a hand-written stacked loop (the limit).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from fcn_research.fit import build_data, build_network
from fcn_research.run_dirs import CONF_DIR
from fcn_research.train import train, train_stack

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Case:
    """One benchmark case: config overrides and the number of optimizer steps."""

    name: str
    overrides: list[str]
    steps: int
    times: dict[str, list[float]] = field(default_factory=dict)


CASES = [
    Case(
        "a: digits 5x128, batch 64",
        ["data=digits", "depth=5", "width=128", "batch_size=64", "activation=relu"],
        1500,
    ),
    Case(
        "b: notebook XOR 2-8-1 tanh, full batch",
        # 10 epochs of 1000 full-batch steps, each epoch one Lightning batch (steps_per_batch).
        [
            "data=xor_table",
            "data.min_batches_per_epoch=1000",
            "steps_per_batch=1000",
            "depth=2",
            "width=8",
            "activation=tanh",
            "optimizer=sgd",
            "lr=0.1",
        ],
        10_000,
    ),
    Case(
        "c: 2-D 16k samples, depth 3 x 512, batch 256",
        ["data=circle", "data.num_samples=20000", "depth=3", "width=512", "batch_size=256"],
        600,
    ),
]


def _compose(overrides: list[str], out: Path) -> object:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="train"):
        cfg = compose(
            "train", overrides=[*overrides, f"output_dir='{out}'"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def plain_loop(overrides: list[str], steps: int, out: Path, device: str = "cpu") -> float:
    """The notebook's loop over in-memory tensors on ``device``: forward, loss, backward,
    step, zero_grad."""
    cfg = _compose(overrides, out)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))  # the same threads as the template's jobs
    datamodule = build_data(cfg)
    model, task = build_network(cfg, datamodule).to(device), datamodule.task  # a plain MLP
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    x, y = datamodule.x_train.to(device), datamodule.y_train.to(device)
    bs = datamodule.batch_size
    start = time.perf_counter()
    done = 0
    while done < steps:
        perm = torch.randperm(len(x), device=device)
        xs, ys = x[perm], y[perm]
        for i in range(0, len(x), bs):
            out_ = model(xs[i : i + bs])
            if task == "multiclass":
                loss = F.cross_entropy(out_, ys[i : i + bs])
            else:
                loss = F.binary_cross_entropy_with_logits(out_.squeeze(-1), ys[i : i + bs])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    if x.is_cuda:
        torch.cuda.synchronize()  # the clock stops when the device's queued steps are done
    return time.perf_counter() - start


def template(
    overrides: list[str], steps: int, out: Path, instruments: bool, device: str = "cpu"
) -> float:
    """``train(cfg)`` as a user runs it (wall time of the whole job, build to result.json),
    on the Lightning accelerator ``device``."""
    cfg = _compose([*overrides, *_max_steps(steps, instruments, device)], out)
    start = time.perf_counter()
    result = train(cfg)
    elapsed = time.perf_counter() - start
    if result["global_step"] != steps:
        raise RuntimeError(f"template ran {result['global_step']} steps, expected {steps}")
    return elapsed


def _max_steps(steps: int, instruments: bool, device: str = "cpu") -> list[str]:
    extra = [
        f"+trainer.max_steps={steps}",
        "max_epochs=-1",
        "trainer.enable_progress_bar=false",
        f"trainer.accelerator={device}",
    ]
    return extra if instruments else [*extra, "callbacks=none"]


def stacked(
    overrides: list[str],
    steps: int,
    out: Path,
    members: int,
    instruments: bool,
    device: str = "cpu",
) -> float:
    """``train_stack`` of ``members`` jobs (seeds 0..M-1) as one stack on the Lightning
    accelerator ``device`` (wall time)."""
    cfgs = [
        _compose([*overrides, *_max_steps(steps, instruments, device), f"seed={m}"], out / f"m{m}")
        for m in range(members)
    ]
    start = time.perf_counter()
    results = train_stack(cfgs, {"id": "bench"})
    elapsed = time.perf_counter() - start
    if any(r["global_step"] != steps for r in results):
        raise RuntimeError(f"a member ran {[r['global_step'] for r in results]} steps, not {steps}")
    return elapsed


def basic_jobs(overrides: list[str], steps: int, out: Path, members: int) -> float:
    """``members`` jobs one after another, as Hydra's basic launcher runs a sweep."""
    return sum(
        template([*overrides, f"seed={m}"], steps, out / f"j{m}", instruments=True)
        for m in range(members)
    )


def stack_case(members: list[int], steps: int = 1500, repeats: int = 1) -> None:
    """Case (d): case (a)'s network and data for M members, four ways interleaved: the plain
    loop M times, M basic-launcher jobs, one stack of M (instruments on, and off); prints
    model-steps per second (M x steps / wall time) and the ratios."""
    overrides = CASES[0].overrides
    ways: dict[str, Callable[[Path, int], float]] = {
        "plain loop x M": lambda p, m: sum(
            plain_loop(overrides, steps, p / f"p{k}") for k in range(m)
        ),
        "basic launcher": lambda p, m: basic_jobs(overrides, steps, p, m),
        "stack": lambda p, m: stacked(overrides, steps, p, m, instruments=True),
        "stack, no instr.": lambda p, m: stacked(overrides, steps, p, m, instruments=False),
    }
    print(f"\nd: {CASES[0].name}, {steps} steps per member: model-steps/s (median wall time)")
    with tempfile.TemporaryDirectory() as tmp:
        for m in members:
            times: dict[str, list[float]] = {}
            for r in range(repeats):
                for k, (way, fn) in enumerate(ways.items()):
                    out = Path(tmp) / f"d{m}_{r}_{k}"
                    times.setdefault(way, []).append(fn(out, m))
            med = {way: statistics.median(t) for way, t in times.items()}
            cells = "  ".join(f"{way} {m * steps / t:7.0f} ({t:6.1f} s)" for way, t in med.items())
            print(f"  M={m:<4d} {cells}")
            print(
                f"         stack vs basic launcher {med['basic launcher'] / med['stack']:.2f}x, "
                f"vs plain loop {med['plain loop x M'] / med['stack']:.2f}x, "
                f"instruments cost {med['stack'] / med['stack, no instr.']:.2f}x"
            )


# Case (e): TensorFlow Playground's scale, where the framework's per-step cost is everything.
LIMIT_OVERRIDES = [
    "data=moons",
    "depth=3",
    "width=8",
    "batch_size=32",
    "activation=tanh",
    "optimizer=adam",
]


def stacked_loop(overrides: list[str], steps: int, out: Path, members: int) -> float:
    """The limit: ``members`` MLPs as (M, out, in) weight tensors, ``baddbmm`` forward, one
    backward of the members' summed losses, torch's Adam on the stacked tensors (Adam is
    elementwise, so each member is updated as alone); each member its own data order."""
    cfg = _compose(overrides, out)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    datamodule = build_data(cfg)
    x, y = datamodule.x_train, datamodule.y_train
    bs, n, depth, width = datamodule.batch_size, len(x), int(cfg.depth), int(cfg.width)
    sizes = [x.shape[1], *[width] * (depth - 1), 1]
    torch.manual_seed(0)
    weights, biases = [], []
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = fan_in**-0.5  # nn.Linear's default ranges
        weights.append((torch.rand(members, fan_out, fan_in) * 2 - 1).mul_(bound).requires_grad_())
        biases.append((torch.rand(members, 1, fan_out) * 2 - 1).mul_(bound).requires_grad_())
    optimizer = torch.optim.Adam([*weights, *biases], lr=float(cfg.lr))
    start = time.perf_counter()
    done = 0
    while done < steps:
        perm = torch.rand(members, n).argsort(dim=1)  # one order per member
        xs, ys = x[perm], y[perm]  # (M, n, in), (M, n)
        for i in range(0, n, bs):
            h = xs[:, i : i + bs]
            for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
                h = torch.baddbmm(b, h, w.transpose(1, 2))
                if k < depth - 1:
                    h = torch.tanh(h)
            loss = F.binary_cross_entropy_with_logits(
                h.squeeze(-1), ys[:, i : i + bs], reduction="none"
            )
            loss.mean(dim=1).sum().backward()  # each member's mean loss, gradients apart
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def limit_case(members: list[int], steps: int = 1500, repeats: int = 1) -> dict[int, dict]:
    """Case (e): moons, 2-8-8-1 tanh, batch 32, Adam, ``steps`` per member, four ways
    interleaved per M: the plain loop (timed once per repeat; its model-steps/s does not
    depend on M), the hand-written stacked loop, one stack of M through the template with the
    default instruments and with ``callbacks=none`` (at M = 1: ``train(cfg)``, one job).
    Prints model-steps/s (M x steps / wall time) and each way's time over the limit's; returns
    the median model-steps/s by M and way."""
    overrides = LIMIT_OVERRIDES

    def stack(p: Path, m: int, instruments: bool) -> float:
        if m == 1:
            return template(overrides, steps, p, instruments=instruments)
        return stacked(overrides, steps, p, m, instruments=instruments)

    ways: dict[str, Callable[[Path, int], float]] = {
        "plain loop x M": lambda p, m: m * plain_loop(overrides, steps, p),
        "stacked loop": lambda p, m: stacked_loop(overrides, steps, p, m),
        "stack": lambda p, m: stack(p, m, True),
        "stack, no instr.": lambda p, m: stack(p, m, False),
    }
    print(
        f"\ne: moons, 2-8-8-1 tanh, batch 32, Adam, {steps} steps per member: model-steps/s "
        "(median wall time; plain loop timed once and multiplied by M; stack at M=1 is one "
        "job, train(cfg))"
    )
    rates: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in members:
            times: dict[str, list[float]] = {}
            for r in range(repeats):
                for k, (way, fn) in enumerate(ways.items()):
                    times.setdefault(way, []).append(fn(Path(tmp) / f"e{m}_{r}_{k}", m))
            med = {way: statistics.median(t) for way, t in times.items()}
            rates[m] = {way: m * steps / t for way, t in med.items()}
            cells = "  ".join(f"{way} {m * steps / t:8.0f} ({t:6.1f} s)" for way, t in med.items())
            print(f"  M={m:<4d} {cells}")
            limit = med["stacked loop"]
            ratios = ", ".join(
                f"{way} {t / limit:.2f}x" for way, t in med.items() if way != "stacked loop"
            )
            print(
                f"         time over the limit's: {ratios}; "
                f"stack over plain loop {med['stack'] / med['plain loop x M']:.2f}x "
                f"(no instr. {med['stack, no instr.'] / med['plain loop x M']:.2f}x)"
            )
    return rates


def _peak_rss_of(code: str) -> float:
    """Peak resident memory (MiB) of a fresh Python running ``code``: its own ``VmHWM``, which
    exec resets (``ru_maxrss`` would carry over the parent's peak into the forked child)."""
    report = (
        "\nimport re\nwith open('/proc/self/status') as f:\n"
        "    print(int(re.search(r'VmHWM:\\s+(\\d+)', f.read()).group(1)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code + report], check=True, capture_output=True, text=True
    )
    return int(out.stdout.split()[-1]) / 1024  # kB


def stack_rss_mib(members: int, steps: int = 100, overrides: list[str] | None = None) -> float:
    """Peak resident memory (MiB) of a process that trains one stack of ``members`` (case
    (a)'s network unless ``overrides`` say otherwise)."""
    overrides = CASES[0].overrides if overrides is None else overrides
    return _peak_rss_of(
        "import tempfile; from pathlib import Path\n"
        "from fcn_research.programs import benchmark as b\n"
        "with tempfile.TemporaryDirectory() as t:\n"
        f"    b.stacked({overrides!r}, {steps}, Path(t), {members}, instruments=True)\n"
    )


def run(repeats: int = 3, scale: float = 1.0, only: str = "abc") -> list[Case]:
    """Run every case ``repeats`` times, the three ways interleaved; return the timings."""
    ways: dict[str, Callable[[list[str], int, Path], float]] = {
        "plain": plain_loop,
        "template": lambda o, s, p: template(o, s, p, instruments=True),
        "no_instruments": lambda o, s, p: template(o, s, p, instruments=False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        cases = [c for c in CASES if c.name[0] in only]
        for case in cases:
            steps = max(10, int(case.steps * scale))
            case.steps = steps
            for r in range(repeats):
                for way, fn in ways.items():
                    out = Path(tmp) / f"{case.name[0]}_{way}_{r}"
                    case.times.setdefault(way, []).append(fn(case.overrides, steps, out))
    return cases_report(cases)


def cases_report(cases: list[Case]) -> list[Case]:
    """Print steps/s (median and spread) and the ratios to the plain loop."""
    for case in cases:
        print(f"\n{case.name}  ({case.steps} steps)")
        plain = statistics.median(case.times["plain"])
        for way, times in case.times.items():
            med = statistics.median(times)
            print(
                f"  {way:15s} {case.steps / med:9.0f} steps/s  median {med:6.2f} s  "
                f"[{min(times):.2f}..{max(times):.2f}]  ratio to plain {med / plain:5.2f}"
            )
        inst = statistics.median(case.times["template"]) / statistics.median(
            case.times["no_instruments"]
        )
        print(f"  instruments cost: template / no_instruments = {inst:.3f}")
    return cases


def sweep_startup(jobs: int = 4) -> list[float]:
    """Seconds from one job's end (its result.json) to the next job's first step, in a
    basic-launcher sweep run as a user runs it (``python train.py -m ...``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        depths = ",".join(str(d) for d in range(2, 2 + jobs))
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "-m",
                f"depth={depths}",
                "data=digits",
                "max_epochs=2",
                "trainer.enable_progress_bar=false",
                f"hydra.sweep.dir={tmp}/s",
            ],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        jobs_in_order = sorted(
            (p for p in (Path(tmp) / "s").iterdir() if (p / "result.json").exists()),
            key=lambda p: (p / "result.json").stat().st_mtime,
        )
        ends, starts = [], []
        for job in jobs_in_order:
            ends.append((job / "result.json").stat().st_mtime)
            acc = EventAccumulator(str(job))
            acc.Reload()
            starts.append(acc.Scalars("grad_norm/layer_01")[0].wall_time)
    return [start - end for end, start in zip(ends[:-1], starts[1:], strict=True)]


def peak_rss_mib(overrides: list[str]) -> float:
    """Peak resident memory (MiB) of one ``python train.py`` job."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [str(ROOT / "train.py"), *overrides, "trainer.enable_progress_bar=false"]
        argv.append(f"hydra.run.dir={tmp}/run")
        return _peak_rss_of(
            "import runpy, sys\n"
            f"sys.argv = {argv!r}\n"
            "try:\n"
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
        )


def main() -> None:
    """``python scripts/benchmark.py [--repeats N] [--scale F] [--members 1,4,16,64]
    [--limit-members 1,16,64,256]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's steps")
    parser.add_argument("--cases", default="abc", help="which cases to run, e.g. 'ac'")
    parser.add_argument("--no-startup", action="store_true", help="skip the sweep start-up check")
    parser.add_argument(
        "--members", default="1,4,16,64", help="case d: stack sizes M ('' skips case d)"
    )
    parser.add_argument("--stack-repeats", type=int, default=1, help="cases d, e: repeats per M")
    parser.add_argument(
        "--limit-members",
        default="1,16,64,256",
        help="case e: stack sizes M against the hand-written stacked loop ('' skips case e)",
    )
    args = parser.parse_args()
    if args.cases:
        run(args.repeats, args.scale, args.cases)
    members = [int(m) for m in args.members.split(",") if m]
    if members:
        stack_case(members, max(10, int(1500 * args.scale)), args.stack_repeats)
        top = max(members)
        one, many = stack_rss_mib(1), stack_rss_mib(top)
        print(
            f"peak RSS of one stack: M=1 {one:.0f} MiB, M={top} {many:.0f} MiB: "
            f"{many / top:.1f} MiB per member, {(many - one) / max(top - 1, 1):.1f} MiB per "
            "added member"
        )
    limit_members = [int(m) for m in args.limit_members.split(",") if m]
    if limit_members:
        limit_case(limit_members, max(10, int(1500 * args.scale)), args.stack_repeats)
        top = max(limit_members)
        rss = stack_rss_mib(top, overrides=LIMIT_OVERRIDES)
        print(f"peak RSS of one case-e stack of M={top}: {rss:.0f} MiB")
    if not args.no_startup:
        gaps = sweep_startup()
        print(
            f"\nsweep start-up: previous job's end -> next job's first step: "
            f"{', '.join(f'{g:.2f}' for g in gaps)} s (max {max(gaps):.2f} s)"
        )
        rss = peak_rss_mib(["data=digits", "depth=5", "width=128", "max_epochs=5"])
        print(f"peak RSS of one digits job (5x128, 5 epochs, instruments on): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
