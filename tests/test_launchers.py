"""Launcher presets (Ray, submitit) and the ddp_spawn trainer: jobs land where they should."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.data.base import TensorBatches
from fcn_research.results import read_result

QUIET = ["trainer.enable_progress_bar=false", "max_epochs=1"]
# Ray's server binds to localhost only; the sweep declares its resources instead of probing.
RAY = ["hydra.launcher.ray.init.num_cpus=4", "hydra.launcher.ray.init.num_gpus=2"]


def _results(sweep: Path) -> list[dict]:
    return [read_result(p.parent) for p in sorted(sweep.glob("*/result.json"))]


def _span(job_dir: Path) -> tuple[float, float]:
    """When the job ran: Hydra writes .hydra/config.yaml first, result.json is written last."""
    return (job_dir / ".hydra" / "config.yaml").stat().st_mtime, (
        job_dir / "result.json"
    ).stat().st_mtime


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("local", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
        ("ray", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
        ("gpus", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
        ("ray_cluster", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ],
)
def test_launcher_presets_compose(make_cfg, launcher, target):
    if launcher != "local":
        pytest.importorskip("ray" if "ray" in target else "submitit")
    cfg = make_cfg(f"launcher={launcher}")
    assert cfg.hydra.launcher._target_ == target


def test_ray_presets_reserve_cores_and_gpus(make_cfg):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    ray = make_cfg("launcher=ray").hydra.launcher.ray
    assert ray.init.address == "local" and ray.init.include_dashboard is False
    assert ray.init._node_ip_address == "127.0.0.1"
    assert (ray.remote.num_cpus, ray.remote.num_gpus) == (1, 0)
    # Ray then hides every GPU from a job that reserved none, so it cannot crowd onto them.
    assert ray.remote.runtime_env.env_vars.RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO == "1"
    gpus = make_cfg("launcher=gpus", "gpus_per_job=0.25", "cpus_per_job=2").hydra.launcher.ray
    assert (gpus.remote.num_cpus, gpus.remote.num_gpus) == (2, 0.25)
    cluster = make_cfg("launcher=ray_cluster", "address=10.0.0.1:6379").hydra.launcher.ray
    assert dict(cluster.init) == {"address": "10.0.0.1:6379"}  # no local-only options


def test_slurm_preset_renders_submitit_parameters(make_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = make_cfg(
        "launcher=slurm", "partition=gpu", "time_min=30", "array_parallelism=8", "mem_gb=32"
    )
    launcher = cfg.hydra.launcher
    assert launcher.partition == "gpu"
    assert launcher.timeout_min == 30
    assert launcher.array_parallelism == 8
    assert launcher.gpus_per_task == 1
    assert launcher.cpus_per_task == 1
    assert launcher.mem_gb == 32
    assert launcher.tasks_per_node == 1
    assert launcher.max_num_timeout == 3  # submitit requeues on timeout; jobs resume
    assert str(launcher.submitit_folder).endswith("hydra_sweep/.submitit/%j")
    (plugin,) = instantiate(cfg.trainer.plugins)
    assert type(plugin).__name__ == "SLURMEnvironment"
    assert plugin.auto_requeue is False  # submitit owns requeueing
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {"partition", "time_min", "array_parallelism", "gpus_per_job"} <= excluded


@pytest.mark.parametrize(
    "gpus_per_job",
    [1, 0.5, 0],
)
@pytest.mark.slow  # tests Ray's placement more than ours (35 s)
def test_ray_gives_each_job_its_logical_gpus(run_cli, tmp_path, gpus_per_job):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    sweep = tmp_path / "sweep"
    run_cli(
        "-m", "launcher=gpus", f"gpus_per_job={gpus_per_job}", "seed=0,1,2,3", "callbacks=none",
        *QUIET, *RAY, f"hydra.sweep.dir={sweep}", timeout=240,
    )  # fmt: skip
    jobs = sorted(p.parent for p in sweep.glob("*/result.json"))
    results = [read_result(job) for job in jobs]
    assert len(results) == 4
    assert {r["status"] for r in results} == {"completed"}  # on CPU: no real GPU here
    devices = [r["env"]["CUDA_VISIBLE_DEVICES"] for r in results]
    if gpus_per_job == 0:
        assert set(devices) == {""}, devices  # no GPU reserved: none visible
        return
    assert set(devices) == {"0", "1"}, devices
    if gpus_per_job == 1:
        # Ray runs two jobs at a time, one per GPU: jobs that overlap never share one.
        for (a, dev_a), (b, dev_b) in itertools.combinations(zip(jobs, devices, strict=True), 2):
            (start_a, end_a), (start_b, end_b) = _span(a), _span(b)
            if start_a < end_b and start_b < end_a:
                assert dev_a != dev_b, (a.name, b.name, devices)
    else:
        assert Counter(devices) == {"0": 2, "1": 2}  # two jobs share each GPU


@pytest.mark.slow
def test_submitit_local_runs_a_sweep(run_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_cli(
        "-m", "launcher=submitit_local", "seed=0,1", "callbacks=none", "trainer.accelerator=cpu",
        *QUIET, f"hydra.sweep.dir={sweep}", timeout=240,
    )  # fmt: skip
    results = _results(sweep)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert [r["hparams"]["seed"] for r in results] == [0, 1]
    assert (sweep / ".submitit").is_dir()


def test_tensor_batches_shard_each_batch_by_rank():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    single = list(TensorBatches(x, y, batch_size=4))
    shards = [list(TensorBatches(x, y, 4, rank_world=lambda r=r: (r, 2))) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(single) == 3  # same steps on every rank
    for batch, part0, part1 in zip(single, *shards, strict=True):
        rows = sorted(torch.cat([part0[1], part1[1]]).tolist())
        assert rows == sorted(batch[1].tolist())  # disjoint shards that cover the batch
    # A tail batch smaller than the world still gives every rank one row (no DDP hang).
    tail = [list(TensorBatches(x[:3], y[:3], 2, rank_world=lambda r=r: (r, 4))) for r in range(4)]
    assert [len(t[-1][1]) for t in tail] == [1, 1, 1, 1]


DDP = ["trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2"]


def test_ddp_spawn_single_run_with_every_instrument(run_cli, tmp_path):
    run_cli(*DDP, *QUIET, "max_epochs=2", "data.num_samples=400")
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    result = read_result(run)
    assert result["status"] == "completed"
    # Measured in the rank-0 worker, recorded from there: the launching process trains nothing.
    # 400 samples: 80 validate, 80 test, 240 train: 4 steps of 64 per epoch.
    assert (result["epochs"], result["global_step"]) == (2, 8)
    for key in ("grad_norm/layer_01", "neurons/dead_fraction", "activations/std/layer_02"):
        assert key in result["init"] and key in result["metrics"], key
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc")] == [4, 8]
    assert [e.step for e in events.Scalars("grad_norm/layer_01")] == list(range(9))
    assert [e.step for e in events.Scalars("test/acc")] == [8]  # tested once, after fit
    assert result["metrics"]["test/acc"] == events.Scalars("test/acc")[0].value
    assert "decision_boundary" in events.Tags()["images"]
    # One event file from fit's rank-0 worker, one from the test's: rank 1 wrote nothing.
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    assert not (tmp_path / "outputs" / "sweeps").exists()


@pytest.mark.slow
def test_ddp_spawn_inside_a_sweep(run_cli, tmp_path):
    run_cli("-m", *DDP, *QUIET, "seed=0,1")
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()  # one sweep dir, not one per rank
    assert [r["status"] for r in _results(sweep)] == ["completed", "completed"]
    assert not (tmp_path / "outputs" / "runs").exists()


def test_a_job_leaves_no_spawn_port_behind(monkeypatch):
    from fcn_research.fit import restored_env

    # What Lightning's spawn launcher does inside a job: set a port in the sweep's process.
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")  # the user's own setting stays
    with restored_env():
        os.environ["MASTER_PORT"] = "29533"
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    assert "MASTER_PORT" not in os.environ  # the next job finds a free port of its own
    assert os.environ["MASTER_ADDR"] == "10.0.0.7"
