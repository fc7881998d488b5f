"""The device check: the sweep, the instruments, determinism, throughput and
packing measured on one CUDA GPU, as one JSON of figures plus a short human summary.

Every item runs in its own child process with a timeout taken from one total budget, so a
slow item is cut short (status ``timeout``, with what it measured so far) and the check goes
on. Items record their figures as they go (``ItemRun.put``), atomically. Without CUDA the
check writes ``skipped: no CUDA`` and exits 0. ``--device cpu`` runs the same logic on the
CPU (tests only: CPU figures come from ``scripts/benchmark.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fcn_research.results import read_result, write_json_atomic

ROOT = Path(__file__).resolve().parents[3]
SRC = Path(__file__).resolve().parents[2]
REPORT_FILE = "gpu_check.json"
SUMMARY_FILE = "gpu_check.md"
# Under 8 minutes in all, start-up of each item's process included.
TOTAL_BUDGET_S = 450.0
# Item -> its own limit (s), in the order they run: the most important first.
ITEM_TIMEOUTS_S = {
    "sweep": 110.0,
    "instruments": 60.0,
    "determinism": 70.0,
    "throughput": 150.0,
    "packing": 100.0,
}
# Float32 tolerance for the step-0 values on CUDA against the CPU's: reductions run in
# another order on the device.
INIT_RTOL, INIT_ATOL = 1e-4, 1e-6
QUIET = ["trainer.enable_progress_bar=false"]
# torch's warning under use_deterministic_algorithms(True, warn_only=True), Lightning's "warn".
NONDETERMINISTIC = "does not have a deterministic implementation"


@dataclass
class Sizes:
    """How much each item runs: the full check, or ``--quick``'s reduced one."""

    sweep: list[str]
    instruments_epochs: int
    determinism_epochs: int
    case_a_steps: int
    members: list[int]
    packing: list[str]


FULL = Sizes(
    sweep=["activation=relu,tanh", "depth=3,5,7"],  # the sweep as typed: default epochs, data
    instruments_epochs=3,
    determinism_epochs=5,
    case_a_steps=1500,
    members=[1, 16, 256, 1024],
    packing=["data=digits", "depth=5", "width=128", "max_epochs=50"],  # spans of several s
)
QUICK = Sizes(
    sweep=["activation=relu,tanh", "depth=3", "max_epochs=1"],
    instruments_epochs=1,
    determinism_epochs=1,
    case_a_steps=20,
    members=[1, 2],
    packing=["data=digits", "depth=3", "width=16", "max_epochs=1"],
)


# ---------------------------------------------------------------- the tags docs/tags.md lists


def design_tags(depth: int, metric: str = "acc", test: bool = False) -> dict[str, set[str]]:
    """Every TensorBoard tag docs/tags.md names for a run of ``depth`` Linear layers: scalars
    and histograms. ``metric``: ``acc`` (classification) or ``mse`` (regression); ``test``:
    the dataset has a test split."""
    layers = [f"layer_{i:02d}" for i in range(1, depth + 1)]
    hidden = layers[:-1]
    scalars = {"train/loss", f"train/{metric}", "val/loss", f"val/{metric}"}
    if test:
        scalars |= {"test/loss", f"test/{metric}"}
    scalars |= {f"grad_norm/{layer}" for layer in layers} | {"grad_norm/ratio_first_last"}
    if hidden:
        scalars.add("neurons/dead_fraction")
    for name in (
        "neurons/dead_fraction",
        "neurons/saturated_fraction",
        "activations/mean",
        "activations/std",
    ):
        scalars |= {f"{name}/{layer}" for layer in hidden}
    histograms = {f"{kind}/{layer}" for kind in ("grad", "weight") for layer in layers}
    return {"scalars": scalars, "histograms": histograms}


def _events(job_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(job_dir), size_guidance={"histograms": 1, "images": 1})
    acc.Reload()
    return acc


def missing_tags(job_dir: Path) -> list[str]:
    """The docs/tags.md tags absent from a job's TensorBoard events (its result.json says the
    depth, the task's metric and whether a test split was evaluated)."""
    result = read_result(job_dir) or {}
    metrics = result.get("metrics", {})
    expected = design_tags(
        int(result.get("hparams", {}).get("depth", 0)),
        "mse" if "val/mse" in metrics else "acc",
        test="test/loss" in metrics,
    )
    tags = _events(job_dir).Tags()
    return sorted(
        tag for kind, wanted in expected.items() for tag in wanted if tag not in tags[kind]
    )


def event_span(job_dir: Path) -> tuple[float, float, int]:
    """A job's first and last scalar event (wall-clock seconds) and its last step."""
    acc = _events(job_dir)
    events = [e for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    if not events:
        raise ValueError(f"{job_dir} has no scalar events")
    times = [e.wall_time for e in events]
    return min(times), max(times), max(e.step for e in events)


def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    """The most intervals ``(start, end)`` that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, change in edges:  # at a tie an end (-1) sorts first: touching is not overlapping
        running += change
        peak = max(peak, running)
    return peak


def compare_metrics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Whether two runs' metrics are bit-identical (NaN equals NaN), and the largest
    difference (inf where only one run has the metric)."""

    def diff(x: float | None, y: float | None) -> float:
        if x == y or (x is not None and y is not None and math.isnan(x) and math.isnan(y)):
            return 0.0
        return abs(x - y) if x is not None and y is not None else math.inf

    diffs = {key: diff(a.get(key), b.get(key)) for key in sorted(set(a) | set(b))}
    different = [key for key, d in diffs.items() if d != 0.0]
    return {
        "identical": not different,
        "max_abs_diff": max(diffs.values(), default=0.0),
        "different": different,
    }


def compare_init(device: dict[str, float], cpu: dict[str, float]) -> dict[str, Any]:
    """Step-0 values on the device against the CPU's, within float32 tolerance."""
    keys = sorted(set(device) & set(cpu))
    abs_diff = {k: abs(device[k] - cpu[k]) for k in keys}
    outside = [
        k for k in keys if not math.isclose(device[k], cpu[k], rel_tol=INIT_RTOL, abs_tol=INIT_ATOL)
    ]
    return {
        "keys": len(keys),
        "only_one_side": sorted(set(device) ^ set(cpu)),
        "max_abs_diff": max(abs_diff.values(), default=0.0),
        "outside_tolerance": outside,
        "rtol": INIT_RTOL,
        "atol": INIT_ATOL,
    }


# ---------------------------------------------------------------- the items


@dataclass
class ItemRun:
    """One item's run: where it writes, on which device, how big; ``put`` records figures."""

    name: str
    out: Path
    device: str
    sizes: Sizes
    figures: dict[str, Any]

    @property
    def accelerator(self) -> str:
        """Lightning's accelerator: ``auto`` on the GPU machine (as a user runs), else cpu."""
        return "auto" if self.device == "cuda" else "cpu"

    def put(self, **figures: Any) -> None:
        """Record figures now, so a timeout keeps them."""
        self.figures.update(figures)
        write_json_atomic(self.out / "items" / f"{self.name}.json", self.figures)


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{path}" if path else str(SRC)}


def _sweep_cli(run: ItemRun, args: list[str], sweep_dir: Path) -> dict[str, Any]:
    """``python train.py -m *args`` as a user types it, into ``sweep_dir``; per job: status,
    wall time, missing tags, whether its events reach its last step."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *args,
        *QUIET,
        f"trainer.accelerator={run.accelerator}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=run.out, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    jobs = []
    found = sweep_dir.iterdir() if sweep_dir.exists() else iter(())
    for job in sorted(p for p in found if (p / "result.json").exists()):
        result = read_result(job) or {}
        try:
            first, last, last_step = event_span(job)
        except ValueError:  # a job that failed before its first event
            first = last = last_step = None
        jobs.append(
            {
                "job": job.name,
                "status": result.get("status"),
                "wall_s": result.get("wall_s"),
                "global_step": result.get("global_step"),
                "missing_tags": missing_tags(job),
                "events_reach_last_step": last_step == result.get("global_step"),
                "first_event": first,
                "last_event": last,
            }
        )
    return {
        "command": " ".join(["python train.py -m", *args]),
        "returncode": proc.returncode,
        "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
        "wall_s": round(wall, 2),
        "jobs": jobs,
    }


def item_sweep(run: ItemRun) -> None:
    """Item 1: the README's sweep on the device (accelerator auto)."""
    figures = _sweep_cli(run, run.sizes.sweep, run.out / "sweep")
    jobs = figures["jobs"]
    expected = math.prod(len(arg.split("=", 1)[1].split(",")) for arg in run.sizes.sweep)
    run.put(
        **figures,
        jobs_expected=expected,
        all_completed=len(jobs) == expected and all(j["status"] == "completed" for j in jobs),
        tensorboard_complete=bool(jobs)
        and all(not j["missing_tags"] and j["events_reach_last_step"] for j in jobs),
        wall_s_per_job=[j["wall_s"] for j in jobs],
    )


def _train(overrides: list[str], out: Path) -> tuple[dict[str, Any], float]:
    from fcn_research.programs.benchmark import _compose
    from fcn_research.train import train

    cfg = _compose([*QUIET, *overrides], out)
    start = time.perf_counter()
    result = train(cfg)
    return result, time.perf_counter() - start


def item_instruments(run: ItemRun) -> None:
    """Item 2: every docs/tags.md tag, host synchronisations inside training steps, and the
    step-0 values against the CPU's for the same seed."""
    base = ["depth=3", f"max_epochs={run.sizes.instruments_epochs}", "seed=0"]
    syncs = run.out / "instruments" / "host_syncs.json"
    counter = [
        "+callbacks.host_syncs._target_=fcn_research.callbacks.host_syncs.HostSyncCounter",
        f"+callbacks.host_syncs.path='{syncs}'",
    ]
    job = run.out / "instruments" / "device"
    result, wall = _train([*base, f"trainer.accelerator={run.accelerator}", *counter], job)
    run.put(
        run_status=result["status"],
        wall_s=round(wall, 2),
        tags_expected=sum(len(v) for v in design_tags(3).values()),
        missing_tags=missing_tags(job),
        host_syncs=json.loads(syncs.read_text()),
    )
    cpu, cpu_wall = _train([*base, "trainer.accelerator=cpu"], run.out / "instruments" / "cpu")
    run.put(cpu_wall_s=round(cpu_wall, 2), init_vs_cpu=compare_init(result["init"], cpu["init"]))


def item_determinism(run: ItemRun) -> None:
    """Item 3: one config and seed twice with ``trainer.deterministic`` warn (the default,
    first: a fresh process's setting), then true; identical metrics? at what cost? (the
    faster of each pair: the process's first run pays the device's warm-up)"""
    base = ["depth=3", f"max_epochs={run.sizes.determinism_epochs}", "seed=0"]
    modes: dict[str, Any] = {}
    for mode in ("warn", "true"):
        metrics, walls, messages = [], [], []
        try:
            for k in range(2):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result, wall = _train(
                        [
                            *base,
                            f"trainer.accelerator={run.accelerator}",
                            f"trainer.deterministic={mode}",
                        ],
                        run.out / "determinism" / f"{mode}_{k}",
                    )
                messages += [str(w.message) for w in caught if NONDETERMINISTIC in str(w.message)]
                metrics.append(result["metrics"])
                walls.append(round(wall, 3))
        except Exception as err:  # e.g. an op without a deterministic CUDA kernel under true
            modes[mode] = {"error": f"{type(err).__name__}: {err}"[:2000], "wall_s": walls}
        else:
            modes[mode] = {**compare_metrics(*metrics), "wall_s": walls}
        modes[mode].update(
            determinism_warnings=len(messages),
            warning_messages=sorted({m[:300] for m in messages})[:5],
        )
        run.put(**modes)
    if all(len(modes[m]["wall_s"]) == 2 for m in modes):
        run.put(
            true_vs_warn_time=round(min(modes["true"]["wall_s"]) / min(modes["warn"]["wall_s"]), 3)
        )


def _member_cfgs(overrides: list[str], out: Path, members: int) -> list[Any]:
    """``members`` configs, seeds 0..M-1, each in its own dir: one composition, copied
    (composing 1024 configs would take minutes)."""
    from fcn_research.programs.benchmark import _compose

    base = _compose(overrides, out / "m0")
    cfgs = []
    for m in range(members):
        cfg = copy.deepcopy(base)
        cfg.seed = m
        cfg.output_dir = str(out / f"m{m}")
        cfgs.append(cfg)
    return cfgs


def _stack(run: ItemRun, cfgs: list[Any]) -> tuple[list[dict[str, Any]], float, float | None]:
    """Train ``cfgs`` as one stack: results, wall time, the device's peak memory (MiB)."""
    from fcn_research.train import train_stack

    cuda = run.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = train_stack(cfgs, {"id": "gpu_check"})
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return results, wall, peak


def item_throughput(run: ItemRun) -> None:
    """Item 4: benchmark case (a), template against the plain loop on the device; then
    stacked members (instruments off, then on): wall time, model-steps/s, peak memory."""
    from fcn_research.programs.benchmark import CASES, _max_steps, plain_loop, template

    overrides, steps = CASES[0].overrides, run.sizes.case_a_steps
    out = run.out / "throughput"
    plain_loop(overrides, 10, out / "warm_up", run.device)  # the device's context, cuBLAS
    plain = plain_loop(overrides, steps, out / "plain", run.device)
    tmpl = template(overrides, steps, out / "template", True, run.accelerator)
    bare = template(overrides, steps, out / "bare", False, run.accelerator)
    run.put(
        case_a={
            "steps": steps,
            "plain_s": round(plain, 3),
            "template_s": round(tmpl, 3),
            "template_no_instruments_s": round(bare, 3),
            "plain_steps_per_s": round(steps / plain, 1),
            "template_steps_per_s": round(steps / tmpl, 1),
            "template_vs_plain": round(tmpl / plain, 3),
        },
        stacked={"steps": steps, "instruments_off": [], "instruments_on": []},
    )
    for instruments in (False, True):
        key = "instruments_on" if instruments else "instruments_off"
        for m in run.sizes.members:
            cfgs = _member_cfgs(
                [*overrides, *_max_steps(steps, instruments, run.accelerator)],
                out / f"{key}_{m}",
                m,
            )
            results, wall, peak = _stack(run, cfgs)
            run.figures["stacked"][key].append(
                {
                    "members": m,
                    "wall_s": round(wall, 3),
                    "model_steps_per_s": round(m * steps / wall, 1),
                    "peak_gpu_mib": None if peak is None else round(peak, 1),
                    "completed": sum(r.get("status") == "completed" for r in results),
                }
            )
            run.put()


def _ray_launcher() -> str | None:
    """Why the Ray launcher cannot run here, or None when it can."""
    for module in ("ray", "hydra_plugins.hydra_ray_launcher"):
        if not _importable(module):
            return f"{module} is not importable"
    return None


def item_packing(run: ItemRun, use_ray: bool | None = None) -> None:
    """Item 5: 8 jobs at ``gpus_per_job=0.25`` through Ray, and how many ran at once (their
    TensorBoard spans overlapping); without Ray the same 8 jobs as one stack."""
    jobs = 8
    why_not = _ray_launcher() if run.device == "cuda" else "not on CUDA"
    use_ray = why_not is None if use_ray is None else use_ray
    run.put(jobs=jobs, engine="ray" if use_ray else "stack", ray_unavailable=why_not)
    if use_ray:
        seeds = ",".join(str(s) for s in range(jobs))
        figures = _sweep_cli(
            run,
            ["launcher=gpus", "gpus_per_job=0.25", f"seed={seeds}", *run.sizes.packing],
            run.out / "packing",
        )
        spans = [(j["first_event"], j["last_event"]) for j in figures["jobs"] if j["first_event"]]
        statuses = [j["status"] for j in figures["jobs"]]
        run.put(returncode=figures["returncode"], stderr_tail=figures["stderr_tail"])
        wall = figures["wall_s"]
    else:
        cfgs = _member_cfgs(
            [*run.sizes.packing, *QUIET, f"trainer.accelerator={run.accelerator}"],
            run.out / "packing",
            jobs,
        )
        results, wall, _ = _stack(run, cfgs)
        spans = [event_span(Path(c.output_dir))[:2] for c in cfgs]
        statuses = [r.get("status") for r in results]
    run.put(
        statuses=statuses,
        wall_s=round(wall, 2),
        max_concurrent=max_concurrent(spans) if spans else 0,
        four_at_once=bool(spans) and max_concurrent(spans) >= 4,
    )


ITEMS: dict[str, Callable[[ItemRun], None]] = {
    "sweep": item_sweep,
    "instruments": item_instruments,
    "determinism": item_determinism,
    "throughput": item_throughput,
    "packing": item_packing,
}


# ---------------------------------------------------------------- the runner


def device_info(device: str) -> dict[str, Any]:
    """What the check ran on: torch, CUDA, the GPU."""
    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "python": sys.version.split()[0],
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_mib=round(props.total_memory / 2**20))
    return info


# What the check imports (module names): the training stack, its data, the Ray launcher.
NEEDED = (
    "lightning",
    "hydra",
    "omegaconf",
    "antlr4",
    "tensorboard",
    "torchmetrics",
    "tqdm",
    "yaml",
    "sklearn",
    "scipy",
    "numpy",
    "ray",
    "hydra_plugins.hydra_ray_launcher",
)


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def precheck() -> str:
    """One line: Python, torch, its CUDA, the GPU, and the modules the check lacks."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    missing = [m for m in NEEDED if not _importable(m)]
    return (
        f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        f", {gpu}; missing: {', '.join(missing) or 'nothing'}"
    )


def _run_item(name: str, out: Path, device: str, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one item in a child process (its own process group, so a timeout ends its
    grandchildren too: the sweep's jobs, Ray's workers); return its figures and status."""
    command = [
        sys.executable,
        "-c",
        "from fcn_research.programs.gpu_check import main; main()",
        "--item",
        name,
        "--out",
        str(out),
        "--device",
        device,
        *(["--quick"] if quick else []),
    ]
    start = time.perf_counter()
    log = (out / "items" / f"{name}.log").open("w")
    proc = subprocess.Popen(
        command, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        rc = proc.wait(timeout=timeout)
        status = "ok" if rc == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = "timeout"
    finally:
        log.close()
    figures = json.loads(p.read_text()) if (p := out / "items" / f"{name}.json").exists() else {}
    figures.update(status=status, wall_s_item=round(time.perf_counter() - start, 1))
    if status == "timeout":
        figures["timeout_s"] = round(timeout, 1)
    if status == "failed":
        figures["error"] = (out / "items" / f"{name}.log").read_text()[-3000:]
    return figures


def run_check(
    out: Path, device: str = "cuda", quick: bool = False, budget_s: float = TOTAL_BUDGET_S
) -> dict[str, Any]:
    """The whole check: every item within ``budget_s``; writes ``gpu_check.json`` and the
    summary into ``out`` and returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"quick": quick, "budget_s": budget_s, **device_info(device)}
    if device == "cuda" and not torch.cuda.is_available():
        report["skipped"] = "no CUDA"
        write_json_atomic(out / REPORT_FILE, report)
        return report
    (out / "items").mkdir(exist_ok=True)
    start = time.perf_counter()
    report["items"] = {}
    for name, limit in ITEM_TIMEOUTS_S.items():
        left = budget_s - (time.perf_counter() - start)
        if left < 10:
            report["items"][name] = {"status": "skipped", "reason": "total budget spent"}
        else:
            report["items"][name] = _run_item(name, out, device, quick, min(limit, left))
        report["wall_s"] = round(time.perf_counter() - start, 1)
        write_json_atomic(out / REPORT_FILE, report)
    (out / SUMMARY_FILE).write_text(summary(report) + "\n")
    return report


def summary(report: dict[str, Any]) -> str:
    """A few lines a person reads: one per item, its status and headline figures."""
    head = f"gpu_check on {report.get('gpu', report['device'])} (torch {report['torch']})"
    if "skipped" in report:
        return f"{head}: skipped: {report['skipped']}"
    lines = [f"{head}, {report.get('wall_s', 0)} s of a {report['budget_s']:.0f} s budget"]
    items = report["items"]
    for name, fig in items.items():
        lines.append(f"- {name}: {fig['status']}")
    sweep = items.get("sweep", {})
    if "jobs" in sweep:
        lines.append(
            f"  sweep: {len(sweep['jobs'])} jobs, all completed {sweep.get('all_completed')}, "
            f"TensorBoard complete {sweep.get('tensorboard_complete')}, "
            f"wall s per job {sweep.get('wall_s_per_job')}"
        )
    inst = items.get("instruments", {})
    if "host_syncs" in inst:
        init = inst.get("init_vs_cpu", {})
        lines.append(
            f"  instruments: missing tags {inst['missing_tags']}, host syncs outside logging "
            f"{inst['host_syncs']['outside_logging']} (at logging "
            f"{inst['host_syncs']['at_logging']}), step 0 vs CPU: max |diff| "
            f"{init.get('max_abs_diff')}, outside tolerance {init.get('outside_tolerance')}"
        )
    det = items.get("determinism", {})
    for mode in ("warn", "true"):
        if "error" in det.get(mode, {}):
            lines.append(f"  deterministic={mode}: {det[mode]['error'][:200]}")
        elif mode in det:
            lines.append(
                f"  deterministic={mode}: identical {det[mode]['identical']} (max |diff| "
                f"{det[mode]['max_abs_diff']:.3g}), wall s {det[mode]['wall_s']}"
            )
    if "true_vs_warn_time" in det:
        lines.append(f"  deterministic=true costs {det['true_vs_warn_time']}x the time of warn")
    thr = items.get("throughput", {})
    if "case_a" in thr:
        a = thr["case_a"]
        lines.append(
            f"  case a: plain {a['plain_steps_per_s']} steps/s, template "
            f"{a['template_steps_per_s']} steps/s ({a['template_vs_plain']}x the plain time)"
        )
        for key in ("instruments_off", "instruments_on"):
            rows = thr["stacked"][key]
            cells = ", ".join(
                f"M={r['members']} {r['model_steps_per_s']}/s ({r['wall_s']} s"
                + (f", {r['peak_gpu_mib']} MiB)" if r["peak_gpu_mib"] is not None else ")")
                for r in rows
            )
            lines.append(f"  stacked, {key.replace('_', ' ')}: {cells}")
    pack = items.get("packing", {})
    if "max_concurrent" in pack:
        lines.append(
            f"  packing via {pack['engine']} ({pack.get('ray_unavailable') or 'Ray present'}): "
            f"{pack['jobs']} jobs, at most {pack['max_concurrent']} at once, "
            f"{pack['wall_s']} s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python scripts/gpu_check.py [--out DIR] [--quick] [--budget S]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"))
    parser.add_argument("--quick", action="store_true", help="a reduced check (tiny sizes)")
    parser.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds in all")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--item", choices=tuple(ITEMS), help=argparse.SUPPRESS)  # a child's
    parser.add_argument(
        "--precheck", action="store_true", help="print what this Python has, then exit"
    )
    args = parser.parse_args(argv)
    if args.precheck:
        print(precheck())
        return
    if args.item:
        sizes = QUICK if args.quick else FULL
        ITEMS[args.item](ItemRun(args.item, args.out.resolve(), args.device, sizes, {}))
        return
    report = run_check(args.out.resolve(), args.device, args.quick, args.budget)
    print(summary(report))
    print(f"figures: {args.out / REPORT_FILE}")


if __name__ == "__main__":
    main()
