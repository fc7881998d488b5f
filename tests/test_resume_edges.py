"""Resume at its edges: untrusted and unreadable checkpoints, single runs' and stack members'
checkpoints resumed as one stack, and one TensorBoard point per tag and step after a resume."""

from __future__ import annotations

import collections
import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from fcn_research.results import read_result, write_json_atomic
from fcn_research.train import train, train_stack

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
TINY = ["data.num_samples=200", *QUIET]


class RunsCode:
    """Pickled as a call of ``os.system``: what an attacker would put into a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _plant(job: Path, marker: Path) -> None:
    """Replace the job's checkpoint with one whose loading would run a command; the job is
    left as a kill leaves it (status running)."""
    torch.save(
        {"epoch": 0, "global_step": 3, "state_dict": {}, "x": RunsCode(marker)},
        job / "checkpoints" / "last.ckpt",
    )
    write_json_atomic(job / "result.json", {**read_result(job), "status": "running"})


def _running(job: Path) -> None:
    write_json_atomic(job / "result.json", {**read_result(job), "status": "running"})


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(make_cfg, run_cli, tmp_path):
    job, marker = tmp_path / "job", tmp_path / "code_ran"
    train(make_cfg("max_epochs=1", "data.num_samples=200", output_dir=job))
    _plant(job, marker)
    proc = run_cli("max_epochs=2", *TINY, f"hydra.run.dir={job}", check=False)
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert proc.returncode == 1
    ckpt = job / "checkpoints" / "last.ckpt"
    line = (
        f"error: checkpoint {ckpt} refused: loading it would call posix.system, and a "
        "checkpoint holds only tensors and plain values (it may run code); delete it to "
        "train the job from the start, or re-run with resume=false"
    )
    assert proc.stderr.strip() == line
    result = read_result(job)
    assert result["status"] == "failed" and result["error"] == line.removeprefix("error: ")
    assert ckpt.exists()  # the user's to inspect

    proc = run_cli("max_epochs=2", *TINY, "resume=false", f"hydra.run.dir={job}")  # the way out
    assert read_result(job)["status"] == "completed" and not marker.exists()


def test_a_stacked_sweep_fails_only_the_job_whose_checkpoint_would_run_code(run_cli, tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "code_ran"
    args = ["-m", "seed=0,1", "max_epochs=1", *TINY, f"hydra.sweep.dir={sweep}"]
    run_cli(*args)
    ok, bad = (sweep / f"data.num_samples=200,max_epochs=1,seed={s}" for s in (0, 1))
    _plant(bad, marker)
    _running(ok)
    proc = run_cli(*args, "launcher=stacked", check=False)
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert proc.returncode == 1
    failed = read_result(bad)
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"checkpoint {bad / 'checkpoints' / 'last.ckpt'} refused")
    assert read_result(ok)["status"] == "completed"


def test_a_truncated_checkpoint_is_set_aside_and_the_job_trains_from_the_start(
    make_cfg, run_cli, tmp_path
):
    common = ["seed=3", "callbacks.model_checkpoint.min_interval_s=0", "data.num_samples=200"]
    reference = train(make_cfg(*common, "max_epochs=3", output_dir=tmp_path / "reference"))
    job = tmp_path / "job"
    train(make_cfg(*common, "max_epochs=2", output_dir=job))
    ckpt = job / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # a disk that filled up
    _running(job)
    proc = run_cli(*common, "max_epochs=3", *QUIET, f"hydra.run.dir={job}")
    assert "is not a readable checkpoint" in proc.stdout + proc.stderr
    assert "set aside as last.ckpt.unreadable, the job trains from the start" in proc.stdout
    assert (job / "checkpoints" / "last.ckpt.unreadable").stat().st_size == len(data) // 2
    resumed = read_result(job)
    assert resumed["status"] == "completed" and resumed["global_step"] == reference["global_step"]
    assert resumed["metrics"] == pytest.approx(reference["metrics"], rel=1e-6, abs=1e-7)
    assert not _duplicates(_raw_points(job))  # the first try's points went with it


def test_single_runs_and_stack_members_resume_as_one_stack(make_cfg, run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["callbacks.model_checkpoint.min_interval_s=0", "data.num_samples=200"]

    def cfg(seed: int, epochs: int, root: Path = sweep) -> object:
        return make_cfg(*args, f"seed={seed}", f"max_epochs={epochs}", output_dir=root / f"s{seed}")

    # Interrupted after 2 of 4 epochs: seed 0 as a single run, seeds 1 and 2 as a stack.
    train(cfg(0, 2))
    train_stack([cfg(1, 2), cfg(2, 2)])
    for seed in range(3):
        _running(sweep / f"s{seed}")
    proc = run_cli(
        "-m", "launcher=stacked", "seed=0,1,2", "max_epochs=4", *args, *QUIET,
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=s${seed}",
    )  # fmt: skip
    logs = "".join(p.read_text() for p in (sweep / ".stacks").glob("*/*.log"))
    assert "resuming 3 members from their checkpoints" in logs, proc.stdout
    whole = train_stack([cfg(s, 4, tmp_path / "whole") for s in range(3)])
    for seed, reference in enumerate(whole):
        resumed = read_result(sweep / f"s{seed}")
        assert resumed["status"] == reference["status"] == "completed"
        assert resumed["global_step"] == reference["global_step"]
        # Seed 0's first epochs ran alone (a matrix product, not a batched one): float32.
        assert resumed["metrics"] == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-6)
        assert resumed["init"] == pytest.approx(reference["init"], rel=1e-6, abs=1e-7)


# train.py, whose process sends itself a signal at an optimizer step, once the instruments
# logged that step: a Ctrl-C or a kill at a moment the test chooses.
SIGNAL_AT = """
import os, runpy, signal, sys
from fcn_research.recording import ResultRecorder

step, name, train_py = int(sys.argv[1]), sys.argv[2], sys.argv[3]
own = ResultRecorder.on_before_optimizer_step  # the last callback to see the step

def on_before_optimizer_step(self, trainer, pl_module, optimizer):
    own(self, trainer, pl_module, optimizer)
    if trainer.global_step == step:
        os.kill(os.getpid(), getattr(signal, name))

ResultRecorder.on_before_optimizer_step = on_before_optimizer_step
sys.argv = [train_py, *sys.argv[4:]]
runpy.run_path(train_py, run_name="__main__")
"""


def _interrupted(tmp_path: Path, step: int, signal: str, *args: str) -> int:
    """Run ``train.py args`` until it sends itself ``signal`` at ``step``; its exit status."""
    (tmp_path / "signal_at.py").write_text(SIGNAL_AT)
    cmd = [sys.executable, "signal_at.py", str(step), signal, str(ROOT / "train.py"), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=300).returncode


def _raw_points(run: Path) -> dict[tuple[str, int], list[float | None]]:
    """Every (tag, step) in the run's event files, with its values as written."""
    points: dict[tuple[str, int], list[float | None]] = collections.defaultdict(list)
    for path in sorted(glob.glob(str(run / "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                simple = value.simple_value if value.HasField("simple_value") else None
                points[value.tag, event.step].append(simple)
    return points


def _shown_points(run: Path) -> collections.Counter:
    """Every (tag, step) TensorBoard shows for the run, with how often."""
    events = EventAccumulator(
        str(run), size_guidance={k: 0 for k in ("scalars", "histograms", "images", "tensors")}
    )
    events.Reload()
    shown: collections.Counter = collections.Counter()
    for kind, read in (("scalars", events.Scalars), ("histograms", events.Histograms),
                       ("images", events.Images), ("tensors", events.Tensors)):  # fmt: skip
        for tag in events.Tags()[kind]:
            shown.update((tag, e.step) for e in read(tag))
    return shown


def _duplicates(points: dict) -> list:
    return sorted(k for k, v in points.items() if (len(v) if isinstance(v, list) else v) > 1)


def _same_points(resumed: Path, whole: Path) -> None:
    """One point per tag and step, raw and as TensorBoard shows them; the uninterrupted
    run's points and values."""
    raw, shown = _raw_points(resumed), _shown_points(resumed)
    assert not _duplicates(raw), _duplicates(raw)[:10]
    assert not _duplicates(shown), _duplicates(shown)[:10]
    reference = _raw_points(whole)
    assert sorted(raw) == sorted(reference)
    for key, values in reference.items():
        if values[0] is not None:  # scalars; histograms and images are binary
            assert raw[key][0] == pytest.approx(values[0], rel=1e-5, abs=1e-6), key


def test_a_run_resumed_after_ctrl_c_has_one_point_per_tag_and_step(run_cli, tmp_path):
    # 2 steps an epoch, a checkpoint after each: Ctrl-C at step 20, after the checkpoint of
    # step 20 (its epoch's end) and the instruments' step 20 (the next step's start).
    args = ["max_epochs=15", "callbacks.model_checkpoint.min_interval_s=0", *TINY]
    job = tmp_path / "job"
    assert _interrupted(tmp_path, 20, "SIGINT", *args, f"hydra.run.dir={job}") != 0
    assert read_result(job)["status"] == "running"
    assert ("grad_norm/layer_01", 20) in _raw_points(job)  # logged before the interrupt
    run_cli(*args, f"hydra.run.dir={job}")
    assert read_result(job)["status"] == "completed"
    run_cli(*args, f"hydra.run.dir={tmp_path / 'whole'}")
    _same_points(job, tmp_path / "whole")


def test_a_stack_resumed_after_sigkill_has_one_point_per_tag_and_step(run_cli, tmp_path):
    args = ["-m", "launcher=stacked", "seed=0,1", "max_epochs=15", *TINY,
            "callbacks.model_checkpoint.min_interval_s=0"]  # fmt: skip
    sweep, whole = tmp_path / "killed", tmp_path / "whole"
    assert _interrupted(tmp_path, 20, "SIGKILL", *args, f"hydra.sweep.dir={sweep}") == -9
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [read_result(j)["status"] for j in jobs] == ["running", "running"]
    run_cli(*args, f"hydra.sweep.dir={sweep}")
    run_cli(*args, f"hydra.sweep.dir={whole}")
    for job in jobs:
        assert read_result(job)["status"] == "completed"
        _same_points(job, whole / job.name)
