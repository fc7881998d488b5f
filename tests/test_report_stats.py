"""The report's statistics: t-intervals, baseline tests, power, --metric and --summary.

A real 3-seed sweep made by the CLI (moons, 2 epochs); numbers are recomputed here from each
job's result.json and TensorBoard events, with the t quantiles from a printed table.
"""

from __future__ import annotations

import csv
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.report import fmt, main, write_report
from fcn_research.report.stats import seeds_needed
from fcn_research.results import read_result, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
T975_DF2 = 4.30265273  # Student's t(0.975) with 2 degrees of freedom (n = 3 seeds)
SEEDS = (0, 1, 2)
SWEEP = [
    "-m",
    "activation=relu,tanh",
    "seed=0,1,2",
    "depth=3",
    "max_epochs=2",
    "data.num_samples=200",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """relu and tanh, 3 seeds each, 2 epochs on moons: trained once for the module."""
    root = tmp_path_factory.mktemp("stats")
    sweep = root / "sweep"
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *SWEEP, f"hydra.sweep.dir={sweep}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return sweep


@pytest.fixture
def sweep(trained_sweep: Path, tmp_path: Path) -> Path:
    """A private copy of the trained sweep (each test writes its own report)."""
    return Path(shutil.copytree(trained_sweep, tmp_path / "sweep"))


def by_activation_and_seed(sweep: Path) -> dict[tuple[str, int], Path]:
    out = {}
    for job in sweep.iterdir():
        result = read_result(job) if job.is_dir() else None
        if result is not None:
            out[result["hparams"]["activation"], result["hparams"]["seed"]] = job
    assert len(out) == 6
    return out


def finals(sweep: Path, activation: str, tag: str) -> list[float]:
    jobs = by_activation_and_seed(sweep)
    return [read_result(jobs[activation, s])["metrics"][tag] for s in SEEDS]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cell(values: list[float], bounded: bool = True) -> str:
    """summary.md's cell for 3 seeds: mean ± std [95 % t-interval, clipped to [0, 1] for an
    accuracy or fraction] (n, range, and whether it was clipped)."""
    mean, std = statistics.fmean(values), statistics.stdev(values)
    half = T975_DF2 * std / math.sqrt(3)
    low, high = mean - half, mean + half
    if bounded:
        low, high = max(low, 0.0), min(high, 1.0)
    clipped = ", CI clipped to [0, 1]" if (low, high) != (mean - half, mean + half) else ""
    return (
        f"{fmt(mean)} ± {fmt(std)} [{fmt(low)}, {fmt(high)}] "
        f"(n=3, range {fmt(min(values))}–{fmt(max(values))}{clipped})"
    )


def test_cells_have_a_t_interval_and_every_neuron_fraction(run_cli, sweep: Path) -> None:
    run_cli(str(sweep), script="scripts/report.py")

    md = (sweep / "report" / "summary.md").read_text()
    rows = read_csv(sweep / "report" / "cells.csv")
    for tag in (
        "val/acc",
        "neurons/dead_fraction",
        "neurons/saturated_fraction",
        "neurons/low_gradient_fraction",
    ):
        assert f"## {tag}" in md
        for activation in ("relu", "tanh"):
            values = finals(sweep, activation, tag)
            assert f"| {activation} | {cell(values)} |" in md, (tag, activation)
            row = next(r for r in rows if r["metric"] == tag and r["activation"] == activation)
            half = T975_DF2 * statistics.stdev(values) / math.sqrt(3)
            mean = statistics.fmean(values)
            assert float(row["ci95_low"]) == pytest.approx(max(mean - half, 0.0))
            assert float(row["ci95_high"]) == pytest.approx(min(mean + half, 1.0))
            assert (row["n"], float(row["min"])) == ("3", min(values))
    # ReLU's dead units are also low-gradient units: an absolute threshold counts at least those.
    for seed in SEEDS:
        metrics = read_result(by_activation_and_seed(sweep)["relu", seed])["metrics"]
        low, dead = metrics["neurons/low_gradient_fraction"], metrics["neurons/dead_fraction"]
        assert low >= dead
    assert "Student's t with n-1 degrees of freedom" in md


def test_baseline_is_a_paired_t_test_by_seed(sweep: Path) -> None:
    assert main([str(sweep), "--baseline", "activation=relu"]) == 0

    md = (sweep / "report" / "summary.md").read_text()
    assert "## Compared with activation=relu" in md
    rows = {r["metric"]: r for r in read_csv(sweep / "report" / "comparisons.csv")}
    assert set(rows) == {
        "val/acc",
        "test/acc",
        "neurons/dead_fraction",
        "neurons/saturated_fraction",
        "neurons/low_gradient_fraction",
        "grad_norm/ratio_first_last",
    }
    checked = 0
    for tag, row in rows.items():
        diffs = [
            t - r
            for t, r in zip(finals(sweep, "tanh", tag), finals(sweep, "relu", tag), strict=True)
        ]
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        assert (row["configuration"], row["baseline"]) == ("activation=tanh", "activation=relu")
        assert (row["test"], row["n"], row["effect_size"]) == ("paired t", "3", "d_z")
        assert float(row["difference"]) == pytest.approx(mean)
        if sd == 0:
            continue
        t = mean / (sd / math.sqrt(3))
        p = 2 * scipy_stats.t.sf(abs(t), df=2)
        assert float(row["p"]) == pytest.approx(p, rel=1e-6), tag
        assert float(row["effect"]) == pytest.approx(mean / sd)
        verdict = "not distinguishable with n = 3" if p >= 0.05 else "than the baseline (p < 0.05)"
        assert verdict in row["verdict"]
        section = md.split(f"### {tag}\n")[1]
        line = next(x for x in section.splitlines() if x.startswith("| activation=tanh |"))
        assert f"| {float(row['p']):.3g} |" in line and verdict in line
        checked += 1
    assert checked >= 2


def fake_sweep(path: Path, values: dict[tuple[str, int], float]) -> Path:
    """A sweep dir without training: multirun.yaml and one result.json per (activation, seed)."""
    activations = ",".join(dict.fromkeys(a for a, _ in values))
    seeds = ",".join(str(s) for s in sorted({s for _, s in values}))
    task = [f"activation={activations}", f"seed={seeds}"]
    path.mkdir(parents=True)
    (path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    for (activation, seed), value in values.items():
        overrides = [f"activation={activation}", f"seed={seed}"]
        write_json_atomic(
            path / ",".join(overrides) / "result.json",
            {"status": "completed", "overrides": overrides, "metrics": {"val/acc": value}},
        )
    return path


def test_verdicts_welch_and_seeds_needed(tmp_path: Path) -> None:
    relu = {0: 0.80, 1: 0.82, 2: 0.84}
    tanh = {0: 0.90, 1: 0.93, 2: 0.91}  # +0.10, +0.11, +0.07: clearly higher
    sigmoid = {0: 0.79, 1: 0.85, 2: 0.83}  # -0.01, +0.03, -0.01
    gelu = {0: 0.85, 1: 0.86, 3: 0.88}  # seed 3 instead of 2: not paired
    # float32 accuracies 0.11 above relu in every seed: differences differ only by rounding.
    elu = {s: float(np.float32(v + 0.11)) for s, v in relu.items()}
    values = {
        (a, s): v
        for a, d in [
            ("relu", relu),
            ("tanh", tanh),
            ("sigmoid", sigmoid),
            ("gelu", gelu),
            ("elu", elu),
        ]
        for s, v in d.items()
    }
    sweep = fake_sweep(tmp_path / "sweep", values)

    write_report(sweep, baseline="activation=relu")

    rows = {r["configuration"]: r for r in read_csv(sweep / "report" / "comparisons.csv")}
    assert rows["activation=tanh"]["verdict"] == "higher than the baseline (p < 0.05)"
    assert rows["activation=sigmoid"]["verdict"] == "not distinguishable with n = 3"
    assert statistics.stdev(elu[s] - relu[s] for s in SEEDS) > 0
    assert (rows["activation=elu"]["p"], rows["activation=elu"]["effect"]) == ("0.0", "inf")
    # Welch by hand: t = diff / sqrt(va/na + vb/nb), Welch-Satterthwaite degrees of freedom.
    a, b = list(gelu.values()), list(relu.values())
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    gelu_row = rows["activation=gelu"]
    assert (gelu_row["test"], gelu_row["effect_size"]) == ("Welch t", "d")
    assert float(gelu_row["p"]) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-6)
    md = (sweep / "report" / "summary.md").read_text()
    assert "| activation=sigmoid | activation=relu |" in md
    assert "not distinguishable with n = 3 |" in md
    # sigmoid's d_z = 0.00333 / 0.0231 = 0.144: the normal approximation ((1.960 + 0.842) /
    # 0.144)^2 says 377 pairs, the t-test's heavier tails two more.
    assert rows["activation=sigmoid"]["seeds_for_80pct_power"] == "379"


def test_baseline_at_each_cells_own_tuned_lr_is_matched_or_said_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What best_lr.csv hands a researcher: each activation confirmed at its own lr.
    runs = {("relu", "0.1"): 0.80, ("gelu", "0.1"): 0.85, ("tanh", "0.03"): 0.90}
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    task = ["activation=relu,gelu,tanh", "seed=0,1,2"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    for (activation, lr), base in runs.items():
        for seed in SEEDS:
            overrides = [f"activation={activation}", f"lr={lr}", f"seed={seed}"]
            write_json_atomic(
                sweep / ",".join(overrides) / "result.json",
                {
                    "status": "completed",
                    "overrides": overrides,
                    "metrics": {"val/acc": base + seed / 100 + (seed == 1) * 0.01},
                },
            )

    assert main([str(sweep), "--baseline", "activation=relu"]) == 0
    out = capsys.readouterr().out
    skip = (
        "activation=tanh, lr=0.03: not compared, no baseline cell has lr=0.03 "
        "(compare across lr: --match-ignore lr)"
    )
    assert skip in " ".join(out.split())
    md = (sweep / "report" / "summary.md").read_text()
    assert f"- {skip}" in md
    rows = read_csv(sweep / "report" / "comparisons.csv")
    assert {r["configuration"] for r in rows} == {"activation=gelu, lr=0.1"}

    assert main([str(sweep), "--baseline", "activation=relu", "--match-ignore", "lr"]) == 0
    assert "not compared" not in capsys.readouterr().out
    rows = {r["configuration"]: r for r in read_csv(sweep / "report" / "comparisons.csv")}
    assert set(rows) == {"activation=gelu, lr=0.1", "activation=tanh, lr=0.03"}
    tanh = rows["activation=tanh, lr=0.03"]
    assert (tanh["baseline"], tanh["test"]) == ("activation=relu, lr=0.1", "paired t")
    assert float(tanh["difference"]) == pytest.approx(0.10)
    assert "matched on every axis but `lr`" in (sweep / "report" / "summary.md").read_text()

    assert main([str(sweep), "--match-ignore", "lr"]) == 2
    assert "--match-ignore lr: applies with --baseline only" in capsys.readouterr().err
    assert main([str(sweep), "--baseline", "activation=relu", "--match-ignore", "depth"]) == 2
    assert "`depth` is not swept; swept axes: activation, lr" in capsys.readouterr().err


def test_seeds_needed_matches_published_power_tables() -> None:
    # Cohen (1988) / G*Power: two-sided alpha 0.05, power 0.8.
    assert seeds_needed(0.5, paired=False) == 64
    assert seeds_needed(0.8, paired=False) == 26
    assert seeds_needed(1.0, paired=False) == 17
    assert seeds_needed(0.5, paired=True) == 34
    assert seeds_needed(-0.5, paired=True) == 34
    assert seeds_needed(0.001, paired=False) is None  # more than 10000


def events(job: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(job), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def last_epochs(job: Path, tag: str, k: int) -> float:
    """Mean of ``tag`` over the last k epoch ends (the steps where val/acc was logged), each
    the last value logged at or before that step."""
    ends = [step for step, _ in events(job, "val/acc")][-k:]
    points = events(job, tag)
    return statistics.fmean([[v for s, v in points if s <= end][-1] for end in ends])


def test_metric_family_and_epoch_summaries(sweep: Path) -> None:
    family = "activations/std/layer_XX"
    assert main([str(sweep), "--metric", family, "--summary", "last_k", "--k", "2"]) == 0

    report = sweep / "report"
    assert (report / "profile_activations_std_layer_XX.png").read_bytes()[:4] == b"\x89PNG"
    md = (report / "summary.md").read_text()
    assert "mean of the last 2 epochs" in md
    jobs = by_activation_and_seed(sweep)
    # val/acc is logged once per epoch (2 epochs): last_k=2 is the mean of both.
    last2 = [statistics.fmean(v for _, v in events(jobs["tanh", s], "val/acc")) for s in SEEDS]
    assert f"| tanh | {cell(last2)} |" in md
    # The per-layer table: a row per configuration, a column per hidden layer (depth 3: two);
    # activations/std is logged on the instruments' schedule, read at each epoch's end.
    assert "| configuration \\ layer | layer 01 | layer 02 |" in md
    layers = [
        cell(
            [last_epochs(jobs["relu", s], f"activations/std/layer_{i:02d}", 2) for s in SEEDS],
            bounded=False,
        )
        for i in (1, 2)
    ]
    assert f"| activation=relu | {layers[0]} | {layers[1]} |" in md

    assert main([str(sweep), "--summary", "best"]) == 0
    best = [max(v for _, v in events(jobs["relu", s], "val/acc")) for s in SEEDS]
    md = (report / "summary.md").read_text()
    assert f"| relu | {cell(best)} |" in md


def test_best_epoch_summary_gives_test_metrics_only_where_tested_at_the_best_epoch(
    sweep: Path,
) -> None:
    jobs = by_activation_and_seed(sweep)
    # tanh's runs say they tested their best validation epoch's weights, relu's their last.
    for s in SEEDS:
        config = jobs["tanh", s] / ".hydra" / "config.yaml"
        loaded = yaml.safe_load(config.read_text())
        assert loaded["test_weights"] == "last"
        config.write_text(yaml.safe_dump({**loaded, "test_weights": "best_val"}))

    assert main([str(sweep), "--summary", "best"]) == 0

    md = (sweep / "report" / "summary.md").read_text()
    section = md.split("## test/acc")[1].split("## ")[0]
    assert f"| tanh | {cell(finals(sweep, 'tanh', 'test/acc'))} |" in section
    assert "| relu | 3 n/a (last epoch tested) |" in section
    assert "only for runs with `test_weights=best_val`" in section
    rows = {
        r["activation"]: r
        for r in read_csv(sweep / "report" / "cells.csv")
        if r["metric"] == "test/acc"
    }
    assert (rows["relu"]["n"], rows["relu"]["not_averaged"]) == ("0", "3 n/a (last epoch tested)")
    assert rows["tanh"]["n"] == "3"


def test_bad_options_name_the_value_and_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {(a, s): 0.8 + s / 100 for a in ("relu", "tanh") for s in SEEDS}
    sweep = str(fake_sweep(tmp_path / "sweep", values))
    cases = [
        (["--metric", "beta/layer_XX"], "--metric beta/layer_XX: no job's result.json has it"),
        (["--baseline", "activation=selu"], "its values: relu, tanh"),
        (["--baseline", "depth=3"], "`depth` is not swept; swept axes: activation"),
        (["--baseline", "seed=0"], "`seed` is the replicate axis"),
        (["--baseline", "relu"], "expected KEY=VALUE"),
    ]
    for args, message in cases:
        assert main([sweep, *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "report").exists()
    # These jobs have no TensorBoard events: best-epoch values are missing, and said so.
    assert main([sweep, "--summary", "best"]) == 0
    md = (tmp_path / "sweep" / "report" / "summary.md").read_text()
    assert "– (no completed job reports `val/acc` per epoch in its TensorBoard events)" in md
    assert (
        "no epoch values"
        in read_csv(tmp_path / "sweep" / "report" / "cells.csv")[0]["not_averaged"]
    )
    with pytest.raises(SystemExit):
        main([sweep, "--k", "2"])
    assert "--k 2 applies to --summary last_k" in capsys.readouterr().err
