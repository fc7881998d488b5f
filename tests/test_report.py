"""The sweep report: a real sweep through the CLI, then CSV, markdown and PNGs checked."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.figure import Figure

from fcn_research.report import figures as report_figures
from fcn_research.report import fmt, main, write_report
from fcn_research.report.loading import load_sweep
from fcn_research.results import read_result, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP = [
    "-m",
    "activation=relu,tanh",
    "depth=2,3",
    "seed=0,1",
    "max_epochs=2",
    "data.num_samples=200",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 activations x 2 depths x 2 seeds, 2 epochs each: trained once for the module."""
    root = tmp_path_factory.mktemp("trained")
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
    """A private copy of the trained sweep, free to be damaged."""
    return Path(shutil.copytree(trained_sweep, tmp_path / "sweep"))


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "report")


def read_csv(sweep: Path) -> dict[str, dict[str, str]]:
    with open(sweep / "report" / "summary.csv", newline="") as f:
        return {row["job"]: row for row in csv.DictReader(f)}


# Student's t quantiles t(0.975, n-1), from a printed table: n = 2 and n = 3.
T975 = {2: 12.7062047, 3: 4.30265273}


def md_cell(values: list[float]) -> str:
    """A cell of an accuracy or fraction as summary.md should show it: mean ± std [95 %
    t-interval, clipped to [0, 1]] (n, range, and whether it was clipped)."""
    mean, n = statistics.fmean(values), len(values)
    if n == 1:
        return f"{fmt(mean)} (n=1)"
    std = statistics.stdev(values)
    half = T975[n] * std / math.sqrt(n)
    low, high = max(mean - half, 0.0), min(mean + half, 1.0)
    clipped = ", CI clipped to [0, 1]" if (low, high) != (mean - half, mean + half) else ""
    return (
        f"{fmt(mean)} ± {fmt(std)} [{fmt(low)}, {fmt(high)}] "
        f"(n={n}, range {fmt(min(values))}–{fmt(max(values))}{clipped})"
    )


def write_fake_sweep(
    path: Path, task: list[str], jobs: list[dict], num_classes: int | None = None
) -> Path:
    """A sweep dir without training: multirun.yaml plus one result.json per job (with the
    data's ``task`` and ``num_classes``, as train() records them, when ``num_classes`` is set)."""
    path.mkdir(parents=True)
    (path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    data = {}
    if num_classes is not None:
        data = {"task": "binary" if num_classes == 2 else "multiclass", "num_classes": num_classes}
    for job in jobs:
        name = ",".join(sorted(job["overrides"]))
        write_json_atomic(path / name / "result.json", {"status": "completed", **data, **job})
    return path


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Every figure the report saves, by file name (the PNGs are still written)."""
    saved: dict[str, Figure] = {}
    save = report_figures._save

    def keep(fig: Figure, path: Path) -> None:
        saved[path.name] = fig
        save(fig, path)

    monkeypatch.setattr(report_figures, "_save", keep)
    return saved


def test_report_matches_each_jobs_result(run_cli, sweep: Path) -> None:
    proc = run_cli(str(sweep), script="scripts/report.py")
    assert str(sweep / "report") in proc.stdout.replace("\n", "")

    rows = read_csv(sweep)
    assert len(rows) == 8
    by_config: dict[tuple[str, int], list[float]] = {}
    by_test: dict[tuple[str, int], list[float]] = {}
    for job in job_dirs(sweep):
        result = read_result(job)
        row = rows[job.name]
        assert row["status"] == result["status"] == "completed"
        assert row["overrides"] == " ".join(result["overrides"])
        for key, value in result["metrics"].items():
            assert row[key] == ("" if value is None else str(value))
        for key, value in result["init"].items():
            assert row[f"init:{key}"] == ("" if value is None else str(value))
        for key, value in result["hparams"].items():
            assert row[key] == str(value)
        assert float(row["wall_s"]) == result["wall_s"]
        hp = result["hparams"]
        by_config.setdefault((hp["activation"], hp["depth"]), []).append(
            result["metrics"]["val/acc"]
        )
        by_test.setdefault((hp["activation"], hp["depth"]), []).append(
            result["metrics"]["test/acc"]
        )

    md = (sweep / "report" / "summary.md").read_text()
    assert "| activation \\ depth | 2 | 3 |" in md
    for activation in ("relu", "tanh"):
        cells = [md_cell(by_config[activation, depth]) for depth in (2, 3)]
        assert f"| {activation} | {cells[0]} | {cells[1]} |" in md
    # The held-out test split's accuracy has a table of its own, after validation's.
    test_section = md[md.index("## test/acc") :]
    assert md.index("## val/acc") < md.index("## test/acc")
    for activation in ("relu", "tanh"):
        cells = [md_cell(by_test[activation, depth]) for depth in (2, 3)]
        assert f"| {activation} | {cells[0]} | {cells[1]} |" in test_section
    assert all(len(v) == 2 for v in by_config.values())

    pngs = sorted((sweep / "report").glob("*.png"))
    assert {"heatmap_val_acc.png", "val_curves.png"} <= {p.name for p in pngs}
    for png in pngs:
        assert f"]({png.name})" in md
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC, png
        assert len(data) > 10_000, png
    assert not list((sweep / "report").glob(".*tmp")), "temp files left behind"


def test_missing_diverged_and_not_started_jobs_are_shown(sweep: Path) -> None:
    jobs = job_dirs(sweep)
    (jobs[0] / "result.json").unlink()
    diverged = read_result(jobs[1])
    diverged["status"] = "diverged"
    write_json_atomic(jobs[1] / "result.json", diverged)
    shutil.rmtree(jobs[-1])

    write_report(sweep)

    rows = read_csv(sweep)
    assert len(rows) == 8
    assert rows[jobs[0].name]["status"] == "missing"
    assert rows[jobs[1].name]["status"] == "diverged"
    assert rows[jobs[1].name]["val/acc"] == str(diverged["metrics"]["val/acc"])
    assert [r["status"] for r in rows.values()].count("not started") == 1
    assert [r["status"] for r in rows.values()].count("completed") == 5

    md = (sweep / "report" / "summary.md").read_text()
    assert "(n=1, 1 not started)" in md
    assert f"| {jobs[1].name} | diverged |" in md
    # jobs[0] and jobs[1] are relu, depth=2, seeds 0 and 1: nothing completed is left to average.
    assert "| relu | 1 diverged, 1 missing |" in md


def test_a_key_set_on_the_command_line_overrides_the_sweepers_params(tmp_path: Path) -> None:
    """``-m experiment=x depth=7 seed=0,1`` where x sweeps depth and activation: Hydra runs
    depth 7 only, so no other depth is reported as not started."""
    jobs = [
        {"overrides": [f"activation={a}", "depth=7", f"seed={s}"], "hparams": {"seed": s}}
        for a in ("relu", "tanh")
        for s in (0, 1)
    ]
    sweep = write_fake_sweep(tmp_path / "sweep", [], jobs)
    hydra = {
        "overrides": {"task": ["experiment=x", "depth=7", "seed=0,1"]},
        "sweeper": {"params": {"depth": "2,7", "activation": "relu,tanh"}},
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    loaded = load_sweep(sweep)
    assert loaded.axes == {"seed": ["0", "1"], "activation": ["relu", "tanh"]}
    assert sorted(job.status for job in loaded.jobs) == ["completed"] * 4


def test_not_a_sweep_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "plain", tmp_path / "absent"):
        assert main([str(path)]) != 0
        err = capsys.readouterr().err
        assert f"not a sweep directory: {path}" in err
        assert "multirun.yaml" in err
        assert not (path / "report").exists()


def test_more_than_two_axes_facet_and_instrument_figures(tmp_path: Path) -> None:
    jobs = []
    for act, depth, init, seed in [
        (a, d, i, s)
        for a in ("relu", "tanh")
        for d in (2, 3, 4)
        for i in ("default", "zeros")
        for s in (0, 1)
    ]:
        layers = {f"grad_norm/layer_{k:02d}": 10.0 ** -(k * depth) for k in range(1, depth + 1)}
        dead = {f"neurons/dead_fraction/layer_{k:02d}": 0.1 * k for k in range(1, depth)}
        metrics = {"val/acc": 0.5 + seed / 10, "neurons/dead_fraction": 0.25, **dead}
        metrics["grad_norm/ratio_first_last"] = 10.0**depth
        jobs.append(
            {
                "overrides": [
                    f"activation={act}",
                    f"depth={depth}",
                    f"initializer={init}",
                    f"seed={seed}",
                ],
                "hparams": {"activation": act, "depth": depth, "initializer": init, "seed": seed},
                "metrics": metrics,
                "init": layers,
            }
        )
    task = ["activation=relu,tanh", "depth=2,3,4", "initializer=default,zeros", "seed=0,1"]
    sweep = write_fake_sweep(tmp_path / "sweep", task, jobs)

    report = write_report(sweep)

    md = (sweep / "report" / "summary.md").read_text()
    # depth (3 values) and activation are the pivot axes; initializer is a facet.
    assert "| activation \\ depth | 2 | 3 | 4 |" in md
    assert md.count("### initializer=default") == 3
    assert md.count("### initializer=zeros") == 3
    assert f"| relu | {md_cell([0.5, 0.6])} |" in md
    assert f"| {md_cell([0.25, 0.25])} |" in md
    assert "| 1.00e+04 ± 0.000 [1.00e+04, 1.00e+04] (n=2, range 1.00e+04–1.00e+04) |" in md
    names = {p.name for p in report.files}
    assert {
        "heatmap_val_acc.png",
        "heatmap_neurons_dead_fraction.png",
        "heatmap_grad_norm_ratio_first_last.png",
        "grad_norm_init.png",
        "dead_fraction_final.png",
    } <= names
    assert report.notes == [
        "heatmap of neurons/saturated_fraction: skipped, no completed job reports it",
        "heatmap of neurons/low_gradient_fraction: skipped, no completed job reports it",
        "mean-field theory (dashed) vs step 0 (solid): skipped, no job has a prediction "
        "(`theory` in result.json)",
        "validation curves: skipped, no job has val/* scalars in its TensorBoard events",
    ]


def test_theory_beside_measurement(tmp_path: Path, figures: dict[str, Figure]) -> None:
    jobs = []
    for sw, seed in [(sw, s) for sw in ("1.0", "3.0") for s in (0, 1)]:
        chi1 = 0.5 * float(sw)
        init = {f"activations/std/layer_{k:02d}": 0.5 + seed / 10 for k in (1, 2)}
        init.update({f"grad_norm/layer_{k:02d}": 2.0 ** (k + seed) for k in (1, 2, 3)})
        theory = {"chi1": chi1, "q_star": 1.0, "notes": ["finite width"]}
        theory.update({f"activations/std/layer_{k:02d}": 0.4 for k in (1, 2)})
        theory.update(
            {f"grad_norm/ratio_to_last/layer_{k:02d}": chi1 ** (3 - k) for k in (1, 2, 3)}
        )
        jobs.append(
            {
                "overrides": [f"initializer.sigma_w2={sw}", f"seed={seed}"],
                "hparams": {"seed": seed},
                "metrics": {"val/acc": 0.9},
                "init": init,
                "theory": theory,
            }
        )
    sweep = write_fake_sweep(tmp_path / "sweep", ["initializer.sigma_w2=1.0,3.0", "seed=0,1"], jobs)
    write_report(sweep)
    rows = read_csv(sweep)
    assert {r["theory:chi1"] for r in rows.values()} == {"0.5", "1.5"}
    assert "theory:notes" not in next(iter(rows.values()))
    md = (sweep / "report" / "summary.md").read_text()
    assert (
        "## theory:chi1" in md and "| 1.500 ± 0.000 [1.500, 1.500] (n=2, range 1.500–1.500) |" in md
    )
    left, right = figures["theory_init.png"].axes[:2]
    lines = {line.get_label(): line for line in left.lines}
    measured = lines["initializer.sigma_w2=1.0 (n=2)"]
    assert list(measured.get_ydata()) == pytest.approx([0.55, 0.55])
    assert lines["initializer.sigma_w2=1.0 (theory)"].get_linestyle() == "--"
    grads = {line.get_label(): list(line.get_ydata()) for line in right.lines}
    # measured: grad_norm/layer_k / grad_norm/layer_03 = 2^(k-3), the same on both seeds
    assert grads["initializer.sigma_w2=3.0 (n=2)"] == pytest.approx([0.25, 0.5, 1.0])
    assert grads["initializer.sigma_w2=3.0 (theory)"] == pytest.approx([2.25, 1.5, 1.0])


def test_phase_diagram_overlays_the_trainable_depth(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    jobs = []
    xi_c = {"0.5": 1.0, "1.76": "inf"}
    for sw, depth in [(sw, d) for sw in xi_c for d in (4, 16)]:
        jobs.append(
            {
                "overrides": [f"initializer.sigma_w2={sw}", f"depth={depth}"],
                "hparams": {"depth": depth},
                "metrics": {"train/acc": 0.9 if sw == "1.76" or depth == 4 else 0.1},
                "theory": {"xi_c": xi_c[sw], "chi1": 0.5},
            }
        )
    sweep = write_fake_sweep(
        tmp_path / "sweep", ["initializer.sigma_w2=0.5,1.76", "depth=4,16"], jobs, num_classes=10
    )
    report = write_report(sweep)
    assert sweep / "report" / "phase_diagram.png" in report.files
    ax = figures["phase_diagram.png"].axes[0]
    assert ax.images[0].get_array().tolist() == [[0.9, 0.9], [0.1, 0.9]]  # rows: depth 4, 16
    (curve,) = ax.lines
    # 6 xi_c = 6 lies between depth 4 (row 0) and 16 (row 1); xi_c = inf runs off the top.
    assert list(curve.get_ydata()) == pytest.approx([2 / 12, 1.5])


def test_single_axis_sweep(tmp_path: Path) -> None:
    jobs = [
        {"overrides": [f"depth={d}"], "hparams": {"depth": d}, "metrics": {"val/mse": d / 10}}
        for d in (1, 2, 3)
    ]
    sweep = write_fake_sweep(tmp_path / "sweep", ["depth=1,2,3"], jobs)
    json_path = sweep / "depth=2" / "result.json"
    json_path.write_text(json.dumps({**json.loads(json_path.read_text()), "status": "failed"}))

    write_report(sweep)

    md = (sweep / "report" / "summary.md").read_text()
    assert "| depth | val/mse |" in md
    assert "| 1 | 0.100 (n=1) |" in md
    assert "| 2 | 1 failed |" in md
    assert (sweep / "report" / "heatmap_val_mse.png").read_bytes()[:8] == PNG_MAGIC


def test_nan_metric_of_a_completed_job_is_counted_and_n_shown(tmp_path: Path) -> None:
    values = {
        (2, 0): 0.5,
        (2, 1): 0.7,
        (2, 2): math.nan,
        (3, 0): 0.9,
        (3, 1): 0.8,
        (3, 2): math.inf,
    }
    jobs = [
        {
            "overrides": [f"depth={depth}", f"seed={seed}"],
            "hparams": {"depth": depth, "seed": seed},
            "metrics": {"val/acc": value},
        }
        for (depth, seed), value in values.items()
    ]
    sweep = write_fake_sweep(tmp_path / "sweep", ["depth=2,3", "seed=0,1,2"], jobs)
    assert read_result(sweep / "depth=2,seed=2")["metrics"]["val/acc"] is None  # as on disk

    write_report(sweep)

    md = (sweep / "report" / "summary.md").read_text()
    # t(0.975, 1) = 12.706: half-widths 12.706 * 0.1 and 12.706 * 0.05, [-0.671, 1.871] and
    # [0.215, 1.485], clipped to an accuracy's [0, 1].
    clipped = "CI clipped to [0, 1]"
    assert (
        f"| 2 | 0.600 ± 0.141 [0.000, 1.000] (n=2, range 0.500–0.700, {clipped}, 1 NaN/inf) |" in md
    )
    assert (
        f"| 3 | 0.850 ± 0.071 [0.215, 1.000] (n=2, range 0.800–0.900, {clipped}, 1 NaN/inf) |" in md
    )


def test_unreadable_result_and_bounded_intervals(tmp_path: Path) -> None:
    jobs = [
        {
            "overrides": [f"depth={depth}", f"seed={seed}"],
            "metrics": {"val/acc": acc, "neurons/dead_fraction": dead, "val/loss": loss},
        }
        for depth, seed, acc, dead, loss in [
            (2, 0, 0.95, 0.0, 0.2),
            (2, 1, 0.99, 0.004, 0.1),
            (3, 0, 0.80, 0.3, 0.5),
            (3, 1, 0.82, 0.5, 0.6),
        ]
    ]
    sweep = write_fake_sweep(tmp_path / "sweep", ["depth=2,3", "seed=0,1,2"], jobs)
    (sweep / "depth=2,seed=2").mkdir()
    (sweep / "depth=2,seed=2" / "result.json").write_text('{"status": "compl')  # disk full

    assert main([str(sweep), "--metric", "val/loss"]) == 0

    rows = read_csv(sweep)
    assert rows["depth=2,seed=2"]["status"] == "unreadable"
    md = (sweep / "report" / "summary.md").read_text()
    assert "| depth=2,seed=2 | unreadable |" in md
    assert "1 unreadable" in md and "missing" not in md.split("Cells (")[0]
    with open(sweep / "report" / "cells.csv", newline="") as f:
        cells = {(r["metric"], r["depth"]): r for r in csv.DictReader(f)}
    # Accuracy 0.97 ± 0.028: t-interval [0.716, 1.224] -> [0.716, 1]; dead fraction
    # 0.002 ± 0.0028: [-0.023, 0.027] -> [0, 0.027]; val/loss has no bound and keeps its own.
    acc, dead, loss = (cells[m, "2"] for m in ("val/acc", "neurons/dead_fraction", "val/loss"))
    assert float(acc["ci95_high"]) == 1.0 and float(acc["ci95_low"]) == pytest.approx(
        0.7159, abs=1e-3
    )
    assert float(dead["ci95_low"]) == 0.0 and float(dead["ci95_high"]) == pytest.approx(
        0.0274, abs=1e-3
    )
    assert float(loss["ci95_low"]) == pytest.approx(
        0.15 - 12.7062047 * 0.0707107 / 2**0.5, abs=1e-4
    )
    assert (acc["ci95_clipped"], dead["ci95_clipped"], loss["ci95_clipped"]) == (
        "True",
        "True",
        "False",
    )
    assert cells["val/acc", "3"]["ci95_clipped"] == "False"
    assert (
        "| 2 | 0.970 ± 0.028 [0.716, 1.000] "
        "(n=2, range 0.950–0.990, CI clipped to [0, 1], 1 unreadable) |" in md
    )
    assert "clipped to [0, 1]" in md.split("## ")[1]  # the legend says so


@pytest.mark.parametrize(
    ("num_classes", "seeds", "chance", "title"),
    [
        (2, [0], 0.5, "final, one seed, n per cell"),
        (10, [0, 1], 0.1, "final, mean ± std [95 % t-interval] over 2 seeds, n per cell"),
    ],
)
def test_heatmap_scale_runs_from_chance_and_title_says_seeds(
    tmp_path: Path,
    figures: dict[str, Figure],
    num_classes: int,
    seeds: list[int],
    chance: float,
    title: str,
) -> None:
    # Accuracies within 2.5 points: the colours must not stretch them over the whole scale.
    accs = {("relu", 2): 0.940, ("relu", 3): 0.950, ("tanh", 2): 0.955, ("tanh", 3): 0.965}
    jobs = [
        {
            "overrides": [f"activation={a}", f"depth={d}", f"seed={s}"],
            "hparams": {"activation": a, "depth": d, "seed": s},
            "metrics": {"val/acc": acc + s / 1000, "neurons/dead_fraction": 0.01},
        }
        for (a, d), acc in accs.items()
        for s in seeds
    ]
    task = ["activation=relu,tanh", "depth=2,3", f"seed={','.join(map(str, seeds))}"]
    write_report(write_fake_sweep(tmp_path / "sweep", task, jobs, num_classes))

    fig = figures["heatmap_val_acc.png"]
    norm = fig.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (pytest.approx(chance), 1.0)
    assert fig.get_suptitle() == f"val/acc: {title}; colour scale {fmt(chance)} = chance to 1"
    cell_texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(cell_texts) == 4
    assert all(f"(n={len(seeds)}" in t for t in cell_texts)
    assert ("±" in cell_texts[0]) == (len(seeds) > 1)

    dead = figures["heatmap_neurons_dead_fraction.png"]
    assert (dead.axes[0].images[0].norm.vmin, dead.axes[0].images[0].norm.vmax) == (0.0, 1.0)
    assert dead.get_suptitle().endswith("; colour scale 0 to 1")


def test_accuracy_scale_without_known_chance_starts_at_zero(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    jobs = [
        {"overrides": [f"depth={d}"], "hparams": {"depth": d}, "metrics": {"val/acc": 0.9}}
        for d in (2, 3)
    ]
    write_report(write_fake_sweep(tmp_path / "sweep", ["depth=2,3"], jobs))

    fig = figures["heatmap_val_acc.png"]
    assert (fig.axes[0].images[0].norm.vmin, fig.axes[0].images[0].norm.vmax) == (0.0, 1.0)
    assert fig.get_suptitle().endswith("; colour scale 0.000 to 1")


def test_21_configurations_sort_numerically_and_every_line_differs(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    depths = [2, 3, 4, 5, 7, 10, 15]  # typed out of order below: 10 must not come before 2
    jobs = []
    for a in ("relu", "tanh", "sigmoid"):
        for d in depths:
            grad = {f"grad_norm/layer_{k:02d}": 10.0**-k for k in range(1, d + 1)}
            dead = {f"neurons/dead_fraction/layer_{k:02d}": 0.01 * k for k in range(1, d)}
            jobs.append(
                {
                    "overrides": [f"activation={a}", f"depth={d}"],
                    "hparams": {"activation": a, "depth": d},
                    "metrics": {"val/acc": 0.95, **dead},
                    "init": grad,
                }
            )
    task = ["activation=relu,tanh,sigmoid", "depth=10,15,2,3,4,5,7"]
    sweep = write_fake_sweep(tmp_path / "sweep", task, jobs, num_classes=2)
    for job in jobs:
        with SummaryWriter(sweep / ",".join(sorted(job["overrides"]))) as writer:
            for step, acc in ((10, 0.7), (20, 0.9), (30, 0.95)):
                writer.add_scalar("val/acc", acc, step)

    write_report(sweep)

    expected = [
        f"activation={a}, depth={d} (n=1)" for a in ("relu", "tanh", "sigmoid") for d in depths
    ]
    md = (sweep / "report" / "summary.md").read_text()
    assert "| activation \\ depth | 2 | 3 | 4 | 5 | 7 | 10 | 15 |" in md
    for name in ("grad_norm_init.png", "dead_fraction_final.png", "val_curves.png"):
        ax = figures[name].axes[-1]
        handles, labels = ax.get_legend_handles_labels()
        assert labels == expected, name
        styles = {(str(h.get_color()), h.get_linestyle(), h.get_marker()) for h in handles}
        assert len(styles) == 21, name
        assert "one seed" in ax.get_title() or name == "val_curves.png"

    dead_ax = figures["dead_fraction_final.png"].axes[0]
    assert dead_ax.get_ylim()[0] <= 0.0 and dead_ax.get_ylim()[1] >= 1.0
    curves = figures["val_curves.png"].axes[0]
    assert curves.get_xlabel() == "optimizer step (trainer.global_step)"
    assert curves.get_ylim()[0] <= 0.5 and curves.get_ylim()[1] >= 1.0
    assert curves.get_title() == "val/acc: one seed (y from 0.500 = chance to 1)"


def test_trained_sweep_figures_read_chance_and_seeds_from_the_jobs(
    sweep: Path, figures: dict[str, Figure]
) -> None:
    write_report(sweep)

    heat = figures["heatmap_val_acc.png"]
    assert (heat.axes[0].images[0].norm.vmin, heat.axes[0].images[0].norm.vmax) == (0.5, 1.0)
    assert "mean ± std [95 % t-interval] over 2 seeds" in heat.get_suptitle()
    curves = figures["val_curves.png"].axes
    labels = [f"activation={a}, depth={d} (n=2)" for a in ("relu", "tanh") for d in (2, 3)]
    assert curves[-1].get_legend_handles_labels()[1] == labels
    assert {ax.get_xlabel() for ax in curves} == {"optimizer step (trainer.global_step)"}


def test_accuracy_below_chance_widens_the_scale_and_says_so(
    tmp_path: Path, figures: dict[str, Figure]
) -> None:
    jobs = [
        {"overrides": [f"depth={d}"], "hparams": {"depth": d}, "metrics": {"val/acc": acc}}
        for d, acc in ((2, 0.4), (3, 0.9))
    ]
    sweep = write_fake_sweep(tmp_path / "sweep", ["depth=2,3"], jobs, num_classes=2)
    write_report(sweep)

    fig = figures["heatmap_val_acc.png"]
    assert fig.axes[0].images[0].norm.vmin == 0.4
    assert fig.get_suptitle().endswith("; colour scale 0.400 (below chance, 0.500) to 1")
