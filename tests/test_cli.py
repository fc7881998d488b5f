"""The real command line: help, --cfg job, the issue's sweep, bad input, a user's own activation."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fcn_research.results import read_result
from fcn_research.run_dirs import unique_dir

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
# Shrink the jobs without changing their names: hydra.* overrides are not in override_dirname,
# and these task overrides are excluded from it.
TINY = ["max_epochs=2", "data.num_samples=100", "width=8"]
TINY_NAMES = (
    "hydra.job.config.override_dirname.exclude_keys="
    "[launcher,resume,trainer.enable_progress_bar,trainer.accelerator,max_epochs,data.num_samples,width]"
)


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def test_help_lists_groups_and_options(run_cli):
    out = run_cli("--help").stdout
    for group in ("activation:", "initializer:", "data:", "optimizer:"):
        assert group in out, group
    for option in ("maxout", "zero_centred_sigmoid", "lecun_normal", "negative_layer", "moons"):
        assert option in out, option
    assert "depth" in out and "width" in out


def test_cfg_job_prints_composed_config(run_cli, tmp_path):
    out = run_cli("--cfg", "job", "depth=5", "activation=tanh").stdout
    assert "depth: 5" in out and "width: 32" in out
    assert "torch.nn.Tanh" in out
    assert not (tmp_path / "outputs").exists(), "printing the config must not create run dirs"


def test_issue_sweep(run_cli, tmp_path):
    proc = run_cli("-m", "activation=relu,tanh", "depth=3,5,7", *TINY, *QUIET, TINY_NAMES)
    sweep = only(list((tmp_path / "outputs" / "sweeps").iterdir()))
    jobs = {p.name: p for p in sweep.iterdir() if p.is_dir()}
    expected = {f"activation={a},depth={d}" for a in ("relu", "tanh") for d in (3, 5, 7)}
    assert set(jobs) == expected
    for name, job in jobs.items():
        assert list(job.glob("events.out.tfevents.*")), name
        assert (job / ".hydra" / "config.yaml").exists() and (
            job / ".hydra" / "overrides.yaml"
        ).exists()
        result = json.loads((job / "result.json").read_text())
        assert result["status"] == "completed", (name, result.get("error"))
        activation, depth = (kv.split("=")[1] for kv in name.split(","))
        assert result["hparams"]["activation"] == activation
        assert result["hparams"]["depth"] == int(depth)
        assert f"activation={activation}" in result["overrides"]
        assert result["epochs"] == 2 and "val/acc" in result["metrics"]
        assert not list(job.glob("*.tmp")), "result.json must be written atomically"
    assert (sweep / "multirun.yaml").exists()
    # The sweep ends with one row per job and the commands that open it.
    out = proc.stdout
    for name in expected:
        assert re.search(rf"^  {re.escape(name)} +completed  val/acc 0\.\d+$", out, re.M), name
    shown = sweep.relative_to(tmp_path)
    assert f"tensorboard --logdir {shown}" in out
    assert f"python scripts/report.py {shown}" in out


# Runs train.py as `python train.py ...` would and reports which heavy modules it imported.
IMPORTS_OF = """
import atexit, runpy, sys
atexit.register(lambda: print("heavy:", [m for m in ("torch", "lightning") if m in sys.modules]))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "depth=5"], ["--info", "config"]])
def test_help_and_config_printing_import_neither_torch_nor_lightning(tmp_path, args):
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF, str(ROOT / "train.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip().splitlines()[-1] == "heavy: []", proc.stdout[-500:]


def test_a_run_says_what_it_is_where_it_writes_and_its_key_metrics(run_cli, tmp_path):
    proc = run_cli("max_epochs=2", "data.num_samples=100", "trainer.accelerator=cpu")
    run = only(list((tmp_path / "outputs" / "runs").iterdir()))
    metrics = read_result(run)["metrics"]
    out = proc.stdout + proc.stderr
    overrides = "max_epochs=2 data.num_samples=100 trainer.accelerator=cpu"
    assert f"{overrides} -> run dir outputs/runs/{run.name}\n" in out
    summary = (
        f"completed: val/acc {metrics['val/acc']:.4g}  "
        f"neurons/dead_fraction {metrics['neurons/dead_fraction']:.4g}  "
        f"grad_norm/ratio_first_last {metrics['grad_norm/ratio_first_last']:.4g}  (epochs 2, "
    )
    assert summary in out
    assert f"val/loss: {metrics['val/loss']:.3f}" in out  # the progress bar
    # Lightning's info lines (devices, a product tip, why fit stopped) wait for hydra.verbose.
    for line in ("GPU available", "TPU available", "litlogger", "`Trainer.fit` stopped"):
        assert line not in out, line
    assert "grad_rms/layer_01" not in out  # every metric is in train.log, not on the terminal
    assert "'grad_rms/layer_01': " in (run / "train.log").read_text()


def test_hydra_verbose_shows_lightnings_info_lines_once_and_in_train_log(run_cli, tmp_path):
    proc = run_cli("max_epochs=1", "data.num_samples=100", *QUIET, "hydra.verbose=lightning")
    out = proc.stdout + proc.stderr
    assert out.count("GPU available: ") == 1, out
    assert out.count("`Trainer.fit` stopped: `max_epochs=1` reached.") == 1, out
    run = only(list((tmp_path / "outputs" / "runs").iterdir()))
    assert "GPU available: " in (run / "train.log").read_text()  # kept with the job's log


def test_unique_dir_never_shares(tmp_path):
    base = str(tmp_path / "sweeps" / "2024-01-01_00-00-00")
    first, second = unique_dir(base), unique_dir(base)
    assert first == base and second == f"{base}_1"
    claimed: list[str] = []
    threads = [threading.Thread(target=lambda: claimed.append(unique_dir(base))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and first not in claimed and second not in claimed
    assert all(Path(p).is_dir() for p in claimed)


@pytest.mark.slow
def test_concurrent_sweeps_get_different_dirs(tmp_path):
    # Both sweeps resolve the same timestamp-free base: the "same second" case, guaranteed.
    args = [
        sys.executable, str(ROOT / "train.py"), "-m", "seed=0,1", "callbacks=none",
        "max_epochs=1", "data.num_samples=50", *QUIET,
        "hydra.sweep.dir=${fcn_unique_dir:outputs/sweeps/same_second}",
    ]  # fmt: skip
    procs = [subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    sweeps = sorted(p.name for p in (tmp_path / "outputs" / "sweeps").iterdir())
    assert sweeps == ["same_second", "same_second_1"]
    for sweep in sweeps:
        for seed in (0, 1):
            job = only(list((tmp_path / "outputs" / "sweeps" / sweep).glob(f"*seed={seed}")))
            result = read_result(job)
            assert result is not None and result["status"] == "completed"


@pytest.mark.parametrize(
    "override, message",
    [
        ("depth=0", "depth must be an integer >= 1 (1 = perceptron), got 0"),
        (
            "data.noise=-1",
            "data: noise must be >= 0, got -1 (fcn_research.data.synthetic.Playground2D)",
        ),
        ("+widht=64", "unknown key 'widht' (did you mean 'width'?)"),
        (
            "initializer=negative_layer initializer.fix_bias=maybe",
            "initializer.fix_bias must be true or false (an argument of "
            "fcn_research.initializers.NegativeLayer), got 'maybe'",
        ),
        ("data=mnist data.root=nodata", "mnist: 4 of its 4 IDX files are missing from "),
    ],
)
def test_bad_value_is_one_line_and_leaves_no_run_dir(run_cli, tmp_path, override, message):
    proc = run_cli(*override.split(), *QUIET, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"error: {message}")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "run dir" not in proc.stdout, "the dir of a refused run is never shown"
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "a refused run leaves no run dir"


def _sigint_when_running(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``train.py args`` and send it SIGINT (Ctrl-C) once a job's result.json says running."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        results = [read_result(p.parent) for p in cwd.glob("outputs/sweeps/*/*/result.json")]
        if any(r and r["status"] == "running" for r in results):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # into the fit
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(), err.decode())


SLOW_SWEEP = ["-m", "seed=0,1", "callbacks=none", "data.num_samples=200", *QUIET]


def test_ctrl_c_on_a_sweep_shows_its_table_and_the_command_that_resumes_it(tmp_path):
    proc = _sigint_when_running([*SLOW_SWEEP, "max_epochs=100000"], tmp_path)
    assert proc.returncode == 130, proc.stderr
    sweep = only(list((tmp_path / "outputs" / "sweeps").iterdir()))
    job = "callbacks=none,data.num_samples=200,max_epochs=100000,seed=0"
    assert read_result(sweep / job)["status"] == "running"
    lines = proc.stderr.strip().splitlines()
    shown = f"outputs/sweeps/{sweep.name}"
    assert lines[-4:] == [
        f"sweep {shown} interrupted: {{'running': 1}}",
        f"  {job}  running",
        "resume it (finished jobs are skipped, the others go on from their last checkpoint):",
        f"  python {ROOT / 'train.py'} {' '.join(SLOW_SWEEP)} max_epochs=100000 "
        f"hydra.sweep.dir={shown}",
    ]


@pytest.mark.slow  # two sweeps
def test_the_command_a_ctrl_c_prints_resumes_the_sweep(run_cli, tmp_path):
    proc = _sigint_when_running([*SLOW_SWEEP, "max_epochs=2000"], tmp_path)
    assert proc.returncode == 130, proc.stderr
    command = shlex.split(proc.stderr.strip().splitlines()[-1])
    assert command[:2] == ["python", str(ROOT / "train.py")]
    run_cli(*command[2:])
    sweep = only(list((tmp_path / "outputs" / "sweeps").iterdir()))
    for seed in (0, 1):
        job = sweep / f"callbacks=none,data.num_samples=200,max_epochs=2000,seed={seed}"
        assert read_result(job)["status"] == "completed"


def test_hydra_full_error_still_shows_the_traceback(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    proc = run_cli("lr=-1", *QUIET, check=False)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError: lr must be a finite number >= 0 (the learning rate), got -1" in proc.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not list(runs.iterdir())


def test_sweep_of_an_excluded_key_is_refused_before_any_job(run_cli, tmp_path):
    # num_threads is left out of job dir names: both jobs would be `depth=2`.
    proc = run_cli("-m", "depth=2", "num_threads=1,2", *QUIET, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: num_threads=1,2 sweeps num_threads, which ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists(), "no sweep dir, no job dir"


def test_unknown_activation_lists_choices(run_cli, tmp_path):
    proc = run_cli("activation=swishy", *QUIET, check=False)
    assert proc.returncode != 0
    assert "swishy" in proc.stderr
    assert "Available options" in proc.stderr and "relu" in proc.stderr and "tanh" in proc.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(read_result(p) for p in runs.iterdir())


MY_ACTS = '''
import torch
from torch import nn


class Swish(nn.Module):
    """x * sigmoid(beta * x) (Ramachandran et al., 2017)."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)
'''


@pytest.fixture
def outside_activation(tmp_path, monkeypatch) -> Path:
    """A user's package outside this repo: ``my_acts.Swish`` and ``conf/activation/swish.yaml``."""
    ext = tmp_path / "ext"
    (ext / "conf" / "activation").mkdir(parents=True)
    (ext / "my_acts.py").write_text(textwrap.dedent(MY_ACTS))
    (ext / "conf" / "activation" / "swish.yaml").write_text(
        "_target_: my_acts.Swish\n_partial_: true\nbeta: 1.5\n"
    )
    # In front of the caller's PYTHONPATH, which may name the fcn_research under test.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ext), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.syspath_prepend(str(ext))
    return ext


def test_custom_activation_from_outside(run_cli, tmp_path, outside_activation):
    searchpath = f"hydra.searchpath=[file://{outside_activation / 'conf'}]"
    run_cli("activation=swish", searchpath, "max_epochs=2", "data.num_samples=200", *QUIET)
    run = only(list((tmp_path / "outputs" / "runs").iterdir()))
    result = read_result(run)
    assert result["status"] == "completed", result.get("error")
    assert result["hparams"]["activation"] == "swish"
    assert result["hparams"]["activation.beta"] == 1.5
    assert list(run.glob("events.out.tfevents.*"))


def test_custom_activation_compose_api(make_cfg, outside_activation):
    from fcn_research.train import build

    searchpath = f"hydra.searchpath=[file://{outside_activation / 'conf'}]"
    cfg = make_cfg("activation=swish", searchpath, "data.num_samples=64", "width=4")
    _, module = build(cfg)
    assert [type(a).__name__ for a in module.model.activations] == ["Swish", "Swish"]
    assert module.model.activations[0].beta == 1.5


def test_custom_activation_from_outside_trains_stacked(run_cli, tmp_path, outside_activation):
    # A user's own activation in a stack: every instrument on, each member equal to its solo
    # job (float32 tolerance: the stack's batched products round differently).
    searchpath = f"hydra.searchpath=[file://{outside_activation / 'conf'}]"
    common = ["-m", "activation=swish", searchpath, "seed=0,1", "max_epochs=2", *QUIET]
    common.append("data.num_samples=200")
    run_cli(*common, f"hydra.sweep.dir={tmp_path / 'solo'}")
    run_cli(*common, "launcher=stacked", f"hydra.sweep.dir={tmp_path / 'stacked'}")
    for seed in (0, 1):
        name = f"activation=swish,data.num_samples=200,max_epochs=2,seed={seed}"
        solo, member = (
            read_result(tmp_path / "solo" / name),
            read_result(tmp_path / "stacked" / name),
        )
        assert member["status"] == "completed", member.get("error")
        assert member["stack"]["members"] == 2
        assert member["metrics"].keys() == solo["metrics"].keys()
        assert "neurons/dead_fraction" in member["metrics"]
        assert member["metrics"] == pytest.approx(solo["metrics"], rel=1e-4, abs=1e-6)
        assert member["init"] == pytest.approx(solo["init"], rel=1e-4, abs=1e-6)
