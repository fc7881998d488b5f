"""Sweeps survive their jobs: kill and rerun resumes, divergence and exceptions stay local."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.job_lock import JobDirBusy
from fcn_research.results import read_result, write_json_atomic
from fcn_research.sweep_status import SweepStatus, sweep_statuses
from fcn_research.train import train

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
FAST = ["callbacks=none", "max_epochs=1", "data.num_samples=200"]
# Three jobs of a few seconds each: long enough to kill the second between two checkpoints,
# which are written after every epoch here (by default at most every 10 s).
SWEEP = [
    "-m",
    "seed=0,1,2",
    "max_epochs=10",
    "callbacks.model_checkpoint.min_interval_s=0",
    "data.num_samples=5000",
    *QUIET,
]


def _job_dirs(sweep: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sweep.glob("*/result.json")}


def _only(sweep: Path, pattern: str) -> Path:
    (job,) = sweep.glob(pattern)
    return job


def _job(sweep: Path, seed: int) -> Path:
    return sweep / f"data.num_samples=5000,max_epochs=10,seed={seed}"


def _measured(sweep: Path) -> dict[str, dict[str, float]]:
    """Per job, its final metrics and its step-0 values (``init:<tag>``)."""
    out = {}
    for name, job in _job_dirs(sweep).items():
        result = read_result(job)
        out[name] = {**result["metrics"], **{f"init:{k}": v for k, v in result["init"].items()}}
    return out


def test_interrupted_run_resumes_to_the_uninterrupted_result(make_cfg, tmp_path):
    common = ["seed=3", "callbacks=none"]
    reference = train(make_cfg(*common, "max_epochs=6", output_dir=tmp_path / "reference"))
    # A job stopped after 3 of its 6 epochs, as a kill leaves it: a checkpoint, status running.
    train(make_cfg(*common, "max_epochs=3", output_dir=tmp_path / "job"))
    interrupted = read_result(tmp_path / "job")
    write_json_atomic(tmp_path / "job" / "result.json", {**interrupted, "status": "running"})
    resumed = train(make_cfg(*common, "max_epochs=6", output_dir=tmp_path / "job"))
    assert resumed["status"] == "completed"
    assert resumed["global_step"] == reference["global_step"]
    assert resumed["metrics"] == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-6)
    assert resumed["metrics"] != interrupted["metrics"]  # it did train on
    assert "test/acc" in resumed["metrics"]  # the test split, evaluated on the resumed network


def test_completed_run_is_skipped(make_cfg, tmp_path):
    cfg = make_cfg("callbacks=none", output_dir=tmp_path / "job")
    first = train(cfg)
    mtime = (tmp_path / "job" / "result.json").stat().st_mtime_ns
    assert train(cfg) == first
    assert (tmp_path / "job" / "result.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_killed_sweep_resumes_and_matches_uninterrupted(run_cli, tmp_path):
    sweep = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "train.py"), *SWEEP, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first, second = _job(sweep, 0), _job(sweep, 1)
    deadline = time.monotonic() + 120
    try:
        # Kill once job 1 is done and job 2 has saved a checkpoint but not finished.
        while time.monotonic() < deadline and proc.poll() is None:
            done = (read_result(first) or {}).get("status") == "completed"
            if done and (second / "checkpoints" / "last.ckpt").exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed; make it longer"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    assert read_result(first)["status"] == "completed"
    assert read_result(second)["status"] == "running"  # killed: never overwritten
    first_mtime = (first / "result.json").stat().st_mtime_ns
    first_events = sorted(first.glob("events.out.tfevents.*"))

    proc = run_cli(*SWEEP, f"hydra.sweep.dir={sweep}")
    assert (first / "result.json").stat().st_mtime_ns == first_mtime  # skipped, not re-run
    assert sorted(first.glob("events.out.tfevents.*")) == first_events
    assert "resuming from" in (second / "train.log").read_text()
    assert sweep_statuses(sweep) == {"completed": [_job(sweep, i).name for i in range(3)]}

    run_cli(*SWEEP, f"hydra.sweep.dir={tmp_path / 'uninterrupted'}")
    resumed, reference = _measured(sweep), _measured(tmp_path / "uninterrupted")
    assert resumed.keys() == reference.keys()
    for job, metrics in reference.items():
        assert "init:grad_norm/layer_01" in metrics and "neurons/dead_fraction" in metrics
        assert resumed[job] == pytest.approx(metrics, rel=1e-5, abs=1e-6), job


def _tags(job_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(job_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_diverging_job_next_to_a_normal_one(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "optimizer=sgd",
        "lr=0.1,1000000.0",
        "max_epochs=5",
        *QUIET,
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0  # diverging is a result, not an error
    normal_dir, diverged_dir = _only(sweep, "lr=0.1,*"), _only(sweep, "lr=1000000.0,*")
    normal, diverged = read_result(normal_dir), read_result(diverged_dir)
    assert normal["status"] == "completed"
    assert diverged["status"] == "diverged"
    assert diverged["epochs"] < 5  # stopped early
    assert _tags(diverged_dir)["train/diverged"][-1] == 1.0
    assert set(_tags(normal_dir)["train/diverged"]) == {0.0}


def test_failed_job_is_recorded_and_the_sweep_exits_1(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "depth=0,2", *QUIET, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1
    failed, ok = read_result(sweep / "depth=0"), read_result(sweep / "depth=2")
    assert failed["status"] == "failed"
    assert "depth must be an integer >= 1" in failed["error"]
    assert ok["status"] == "completed"  # ran after the failure
    assert "job depth=0: failed" in proc.stdout + proc.stderr


def test_a_bad_value_fails_its_job_and_the_sweep_goes_on_and_exits_1(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    # lr=0 is allowed (torch's bound): the jobs' result.json tell the values apart.
    proc = run_cli("-m", "lr=0,abc", *FAST, *QUIET, f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1
    bad, ok = _only(sweep, "*lr=abc*"), _only(sweep, "*lr=0,*")
    assert read_result(ok)["status"] == "completed"
    failed = read_result(bad)
    assert failed["status"] == "failed"
    assert failed["error"] == "lr must be a finite number >= 0 (the learning rate), got 'abc'"
    assert f"job failed: {failed['error']}; the sweep goes on" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def _multirun_end(sweep: Path) -> int | None:
    """SweepStatus's verdict on ``sweep``: the exit status it asks for (None: carry on)."""
    try:
        SweepStatus().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    except SystemExit as exit_:
        return exit_.code
    return None


def test_a_job_dir_without_result_json_fails_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("depth=2", "depth=3"):
        (sweep / name / ".hydra").mkdir(parents=True)
    write_json_atomic(sweep / "depth=3" / "result.json", {"status": "completed"})
    assert sweep_statuses(sweep) == {"completed": ["depth=3"], "missing": ["depth=2"]}
    assert _multirun_end(sweep) == 1
    (sweep / "depth=2").rename(sweep.parent / "elsewhere")
    assert _multirun_end(sweep) is None


def test_a_sweep_without_results_exits_1(tmp_path):
    (tmp_path / "sweep").mkdir()
    assert _multirun_end(tmp_path / "sweep") == 1


def test_diverged_job_is_skipped_on_rerun_like_a_completed_one(make_cfg, tmp_path):
    job = tmp_path / "job"
    diverging = ["optimizer=sgd", "lr=1e12", "data=function", "max_epochs=3", *FAST]
    cfg = make_cfg(*diverging, "callbacks.model_checkpoint.min_interval_s=0", output_dir=job)
    train(cfg)
    first = read_result(job)  # as on disk: NaN losses are null there
    assert first["status"] == "diverged" and (job / "checkpoints" / "last.ckpt").exists()
    mtime = (job / "result.json").stat().st_mtime_ns
    assert train(cfg) == first
    assert train(cfg) == first
    assert (job / "result.json").stat().st_mtime_ns == mtime
    retrained = train(make_cfg(*diverging, "resume=false", output_dir=job))
    assert retrained["status"] == "diverged" and retrained["epochs"] == first["epochs"]
    assert (job / "result.json").stat().st_mtime_ns != mtime


# Holds the job dir's lock until killed, as a job training there would.
HOLDER = """
import sys, time
from fcn_research.job_lock import job_dir_lock
with job_dir_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(300)
"""


def test_second_process_in_a_job_dir_is_refused_until_the_holder_dies(make_cfg, run_cli, tmp_path):
    job = tmp_path / "job"
    write_json_atomic(job / "result.json", {"status": "running", "epochs": 1})
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(job)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (job / "result.json").read_bytes(), (job / "result.json").stat().st_mtime_ns
        busy = rf"job dir {re.escape(str(job))} is in use by pid {holder.pid} on host \S+ "
        cfg = make_cfg(*FAST, output_dir=job)
        with pytest.raises(JobDirBusy, match=busy):
            train(cfg)
        proc = run_cli(*FAST, *QUIET, f"hydra.run.dir={job}", check=False)
        assert proc.returncode == 1
        assert re.fullmatch(f"error: {busy}.*", proc.stderr.strip())
        after = (job / "result.json").read_bytes(), (job / "result.json").stat().st_mtime_ns
        assert after == before, "the refused process touched the holder's result.json"
        assert not list(job.glob("events.out.tfevents.*"))
    finally:
        holder.kill()  # SIGKILL: no chance to clean up; the kernel drops the lock
        holder.wait()
    assert train(cfg)["status"] == "completed"
