"""launcher=stacked: which jobs share a stack, and a stacked sweep through the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.report.loading import load_sweep
from fcn_research.results import read_result
from fcn_research.run_dirs import CONF_DIR
from fcn_research.stack_spec import MEMBER_OPTIMIZER_HPARAMS
from fcn_research.stacking import group_stacks, solo_reason, stack_key
from fcn_research.train import train
from hydra_plugins.fcn_stacked_launcher.stacked_launcher import StackedLauncher

ROOT = Path(__file__).resolve().parents[1]

# Tiny and quiet: a stacked sweep's cost here is the process start, not training.
TINY = [
    "max_epochs=1", "data.num_samples=200", "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]  # fmt: skip


def _jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize(
    "member",
    [
        ["seed=7"],
        ["initializer=xavier_normal"],
        ["initializer=negative_layer", "initializer.target_layer=1"],
        ["lr=0.1"],
        ["optimizer.lr=0.5"],
        ["+optimizer.weight_decay=0.01", "+optimizer.betas=[0.8,0.9]", "+optimizer.eps=1e-6"],
        ["num_threads=2", "resume=false"],
    ],
)
def test_members_may_differ_in_seed_initializer_and_optimizer_numbers(make_cfg, tmp_path, member):
    base = stack_key(make_cfg("depth=3", output_dir=tmp_path / "a"))
    assert stack_key(make_cfg("depth=3", *member, output_dir=tmp_path / "b")) == base


@pytest.mark.parametrize(
    "other",
    [
        ["depth=4"],
        ["width=16"],
        ["activation=tanh"],
        ["data=circle"],
        ["data.seed=3"],  # a stack holds one dataset
        ["batch_size=32"],
        ["max_epochs=3"],
        ["optimizer=sgd"],
        ["+optimizer.amsgrad=true"],
        ["steps_per_batch=1"],
        ["callbacks.neurons=null"],
        ["trainer.accelerator=auto"],  # excluded from job names, but a stack has one device
    ],
)
def test_anything_else_starts_a_new_stack(make_cfg, other):
    assert stack_key(make_cfg(*other)) != stack_key(make_cfg())


# A second value of each optimizer setting a stacked optimizer keeps per member.
OTHER_VALUE = {
    "lr": "0.5",
    "momentum": "0.5",
    "dampening": "0.1",
    "weight_decay": "0.1",
    "betas": "[0.8,0.99]",
    "eps": "1e-6",
}


@pytest.mark.parametrize(
    ("target", "key"), [(t, k) for t, keys in MEMBER_OPTIMIZER_HPARAMS.items() for k in keys]
)
def test_jobs_that_differ_in_a_per_member_optimizer_setting_share_a_stack(make_cfg, target, key):
    group = "optimizer=sgd" if target.endswith("SGD") else "optimizer=adam"
    base = [group, f"optimizer._target_={target}"]
    assert solo_reason(make_cfg(*base)) is None
    assert stack_key(make_cfg(*base, f"++optimizer.{key}={OTHER_VALUE[key]}")) == stack_key(
        make_cfg(*base)
    )


def test_sgd_momentum_stacks_with_plain_sgd(make_cfg):
    sgd = stack_key(make_cfg("optimizer=sgd"))
    assert stack_key(make_cfg("optimizer=sgd", "optimizer.momentum=0.9")) == sgd


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ([], None),
        (["optimizer=sgd"], None),
        (["optimizer._target_=torch.optim.AdamW"], None),
        (["trainer.deterministic=true", "callbacks=none"], None),
        (["optimizer._target_=torch.optim.RMSprop"], "optimizer torch.optim.RMSprop"),
        (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val=1.0"),
        (["trainer=ddp_spawn"], "trainer.strategy=ddp_spawn"),
        (["trainer.devices=2"], "trainer.devices=2"),
        (["trainer.devices=-1"], "trainer.devices=-1"),
        (["+trainer.num_nodes=2"], "trainer.num_nodes=2"),
        (["+trainer.strategy._target_=lightning.pytorch.strategies.SingleDeviceStrategy"], None),
        (["+trainer.precision=16-mixed"], "trainer.precision=16-mixed scales the loss with one"),
        (["+trainer.precision=16"], "trainer.precision=16 scales the loss with one GradScaler"),
        (["+trainer.precision=bf16-mixed"], None),  # no GradScaler: members stay apart
        (["activation=swish_learnable"], None),  # one copy of beta per member
        (["activation._target_=torch.nn.PReLU", "+activation.num_parameters=32"], None),
        (
            ["activation._target_=torch.nn.BatchNorm1d", "+activation.num_features=32"],
            "BatchNorm1d changes buffers of its own in training",
        ),
        (["activation=leaky_relu", "depth=1"], None),  # a perceptron has no activation
        (["experiment=pruning"], "callbacks.pruning (lightning.pytorch.callbacks.ModelPruning)"),
        (  # each member stops on its own (MemberEarlyStopping)
            [
                "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
                "+callbacks.stop.monitor=val/loss",
            ],
            None,
        ),
        (
            [
                "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
                "+callbacks.stop.monitor=val/loss",
                "+trainer.val_check_interval=0.5",
            ],
            "callbacks.stop (lightning.pytorch.callbacks.EarlyStopping) with "
            "trainer.val_check_interval=0.5",
        ),
        (
            [
                "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
                "+callbacks.stop.monitor=val/loss",
                "+trainer.min_epochs=3",
            ],
            "trainer.min_epochs=3 (a stop signal must be final)",
        ),
        (["callbacks=early_stopping"], None),  # the preset: the instruments and EarlyStopping
        (["test_weights=best_val"], "test_weights=best_val keeps one best epoch"),
        (
            ["+callbacks.stop._target_=my_lab.MyEarlyStopping"],
            "callbacks.stop (my_lab.MyEarlyStopping) acts on the whole model",
        ),
    ],
)
def test_solo_reason(make_cfg, overrides, reason):
    got = solo_reason(make_cfg(*overrides))
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


USER_ACTIVATIONS = '''
    import torch
    from torch import nn


    class BatchCentredReLU(nn.Module):
        """relu(x - x.mean(0)): each sample's output depends on the batch's other samples."""

        def forward(self, x):
            return torch.relu(x - x.mean(0))


    class NoisyReLU(nn.Module):
        """ReLU with a random slope for negative inputs in training, as torch's RReLU."""

        def forward(self, x):
            if not self.training:
                return torch.relu(x)
            return torch.where(x >= 0, x, x * torch.rand_like(x) * 0.3)
'''


def test_activations_that_mix_samples_or_draw_random_numbers_run_alone(
    run_cli, make_cfg, tmp_path, monkeypatch
):
    """A stack hands the activation every member's rows at once: a user's activation that
    mixes the rows of a batch, or draws random numbers in training, trains as a stack of one
    (the plan says why), so each member's numbers are its solo job's."""
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "my_activations.py").write_text(textwrap.dedent(USER_ACTIVATIONS))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ext), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.syspath_prepend(str(ext))
    sweep = tmp_path / "sweep"
    acts = "my_activations.BatchCentredReLU,my_activations.NoisyReLU"
    proc = run_cli(
        "-m", "launcher=stacked", f"activation._target_={acts}", "seed=0,1", "depth=2",
        "callbacks.neurons=null", *TINY, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "Launching 4 jobs as 4 stacks" in log
    assert log.count("(alone: BatchCentredReLU mixes the samples of a batch") == 2
    assert log.count("(alone: NoisyReLU draws random numbers in training") == 2
    jobs = _jobs(sweep)
    assert len(jobs) == 4
    for job in jobs:
        result = read_result(job)
        assert result["status"] == "completed", result.get("error")
        assert result["stack"]["members"] == 1
    # Seed 1 of the random one: what its solo job gives, bit for bit (a stack of one).
    job = next(j for j in jobs if "NoisyReLU" in j.name and "seed=1" in j.name)
    solo = train(
        make_cfg(
            "activation._target_=my_activations.NoisyReLU", "seed=1", "depth=2",
            "callbacks.neurons=null", *TINY, output_dir=tmp_path / "solo",
        )
    )  # fmt: skip
    assert read_result(job)["metrics"] == solo["metrics"]


def test_activations_with_parameters_share_a_stack(run_cli, tmp_path):
    """A learnable activation (beta of swish_learnable, PReLU's slopes) gets one copy per
    member: the plan stacks its jobs, and each member learns its own."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", "launcher=stacked", "activation=swish_learnable", "seed=0,1", "lr=0.01,0.1",
        *TINY, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "Launching 4 jobs as 1 stacks" in log and "alone" not in log
    results = [read_result(job) for job in _jobs(sweep)]
    assert [r["stack"]["members"] for r in results] == [4] * 4
    betas = {r["metrics"]["act_param/beta/layer_01"] for r in results}
    assert len(betas) == 4  # each member trained its own beta


def test_jobs_group_in_order_up_to_max_members(make_cfg, tmp_path):
    cfgs = [
        make_cfg("seed=0", output_dir=tmp_path / "0"),
        make_cfg("seed=1", "initializer=kaiming_normal", output_dir=tmp_path / "1"),
        make_cfg("depth=4", output_dir=tmp_path / "2"),
        make_cfg("seed=2", "lr=0.1", output_dir=tmp_path / "3"),
        make_cfg("experiment=pruning", output_dir=tmp_path / "4"),
        make_cfg("experiment=pruning", "seed=1", output_dir=tmp_path / "5"),
        make_cfg("seed=3", output_dir=tmp_path / "6"),
        make_cfg("depth=4", "seed=1", output_dir=tmp_path / "7"),
    ]
    assert group_stacks(cfgs, max_members=64) == [[0, 1, 3, 6], [2, 7], [4], [5]]
    assert group_stacks(cfgs, max_members=2) == [[0, 1], [2, 7], [3, 6], [4], [5]]
    with pytest.raises(ValueError, match=r"max_members must be an integer >= 1.*got 0"):
        group_stacks(cfgs, max_members=0)


def test_stacked_sweep_gives_each_member_the_job_a_solo_sweep_gives(run_cli, tmp_path):
    swept = ["seed=0,1,2", "depth=2", *TINY]
    solo, stacked = tmp_path / "solo", tmp_path / "stacked"
    run_cli("-m", *swept, f"hydra.sweep.dir={solo}")
    proc = run_cli("-m", "launcher=stacked", *swept, f"hydra.sweep.dir={stacked}")
    assert [p.name for p in _jobs(stacked)] == [p.name for p in _jobs(solo)]
    names = [f"data.num_samples=200,depth=2,max_epochs=1,seed={s}" for s in range(3)]
    assert [p.name for p in _jobs(stacked)] == names
    log = proc.stdout + proc.stderr
    assert "stack_000: 3 members" in log
    assert "{'completed': 3}" in log  # the sweep's status counts the members, not .stacks/
    for solo_job, job in zip(_jobs(solo), _jobs(stacked), strict=True):
        result, alone = read_result(job), read_result(solo_job)
        assert result["status"] == "completed"
        assert result["stack"] == {"id": "stack_000", "members": 3}
        assert f"{job.name}: completed: val/acc" in log  # its one-line summary
        for key in ("val/loss", "val/acc", "train/loss"):
            assert result["metrics"][key] == pytest.approx(alone["metrics"][key], rel=1e-4)
        assert result["global_step"] == alone["global_step"]
        assert list(job.glob("events.out.tfevents.*"))  # its own TensorBoard run (fit and test)
        run = EventAccumulator(str(job))
        run.Reload()
        assert "grad_norm/layer_01" in run.Tags()["scalars"]
        # Hydra's record of the job, as the basic launcher writes it (interpolations kept).
        config, config_alone = (
            OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "config.yaml"))
            for d in (job, solo_job)
        )
        assert {k: config[k] for k in config_alone} == config_alone
        hydra, hydra_alone = (
            OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "hydra.yaml").hydra)
            for d in (job, solo_job)
        )
        assert hydra["run"] == hydra_alone["run"]
        assert hydra["sweep"]["subdir"] == hydra_alone["sweep"]["subdir"]
        assert hydra["job"] == hydra_alone["job"]
        assert OmegaConf.load(job / ".hydra" / "overrides.yaml")[0] == "launcher=stacked"
        assert (job / "train.log").stat().st_size > 0
    assert (stacked / ".stacks" / "stack_000" / "manifest.yaml").is_file()
    sweep = load_sweep(stacked)
    assert sorted(j.name for j in sweep.jobs) == [p.name for p in _jobs(stacked)]
    assert {j.status for j in sweep.jobs} == {"completed"}


def test_max_members_splits_stacks_and_a_rerun_skips_completed_members(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "launcher=stacked", "max_members=2", "seed=0,1,2", "depth=2,3",
            "callbacks=none", *TINY, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    run_cli(*args)
    stacks = {job.name: read_result(job)["stack"] for job in _jobs(sweep)}
    name = "callbacks=none,data.num_samples=200,depth={},max_epochs=1,seed={}".format
    # Jobs in Hydra's order (seed, then depth); each shape fills stacks of two in that order.
    assert stacks == {
        name(2, 0): {"id": "stack_000", "members": 2},
        name(3, 0): {"id": "stack_001", "members": 2},
        name(2, 1): {"id": "stack_000", "members": 2},
        name(3, 1): {"id": "stack_001", "members": 2},
        name(2, 2): {"id": "stack_002", "members": 1},
        name(3, 2): {"id": "stack_003", "members": 1},
    }
    lost = sweep / name(3, 1)
    (lost / "result.json").unlink()
    before = {job.name: (job / "result.json").read_bytes() for job in _jobs(sweep) if job != lost}
    proc = run_cli(*args)
    for job, content in before.items():  # skipped: not retrained, not rewritten
        assert (sweep / job / "result.json").read_bytes() == content, job
    assert (proc.stdout + proc.stderr).count("skipping") == 5
    again = read_result(lost)
    assert again["status"] == "completed"
    assert again["stack"] == {"id": "stack_005", "members": 2}  # the re-run's stacks: 004-007


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        ("stack_on=nope", "stack_on must be one of gpus, local, ray"),
        ("max_members=0", "max_members must be an integer >= 1 (jobs per stack), got 0"),
        ("max_members=abc", "max_members must be an integer >= 1 (jobs per stack), got 'abc'"),
    ],
)
def test_a_bad_knob_is_refused_before_the_sweep_has_a_dir(run_cli, tmp_path, knob, message):
    proc = run_cli("-m", "launcher=stacked", knob, "seed=0,1", *TINY, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"error: {message}")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "outputs").exists(), "a refused sweep leaves no dir, no multirun.yaml"


@pytest.mark.slow  # Ray's start (~30 s)
def test_stacks_run_as_ray_tasks(run_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    sweep = tmp_path / "sweep"
    run_cli(
        "-m", "launcher=stacked", "stack_on=ray", "seed=0,1", "depth=2,3", "callbacks=none",
        *TINY, f"hydra.sweep.dir={sweep}", timeout=240,
    )  # fmt: skip
    results = [read_result(job) for job in _jobs(sweep)]
    assert [r["status"] for r in results] == ["completed"] * 4
    assert sorted(r["stack"]["id"] for r in results) == ["stack_000"] * 2 + ["stack_001"] * 2
    # Ray's worker: no GPU reserved, none visible (the launcher=local process sets nothing).
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in results} == {""}


@pytest.mark.slow
def test_stacks_run_as_submitit_jobs(run_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    run_cli(
        "-m", "launcher=stacked", "stack_on=submitit_local", "seed=0,1", "callbacks=none",
        *TINY, f"hydra.sweep.dir={sweep}", timeout=240,
    )  # fmt: skip
    results = [read_result(job) for job in _jobs(sweep)]
    assert [r["status"] for r in results] == ["completed"] * 2
    assert [r["stack"] for r in results] == [{"id": "stack_000", "members": 2}] * 2
    submitted = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    assert len(submitted) == 1, submitted  # one submitit job: the stack


def _launcher(tmp_path: Path, *overrides: str) -> StackedLauncher:
    """A StackedLauncher as ``python train.py -m launcher=stacked seed=0,1 ...`` sets it up."""
    setup_globals()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        sweep = loader.load_configuration(
            "train",
            ["launcher=stacked", f"hydra.sweep.dir='{tmp_path / 'sweep'}'", "seed=0,1", *overrides],
            run_mode=RunMode.MULTIRUN,
        )
    launcher = StackedLauncher(max_members=sweep.max_members, stack_on=sweep.stack_on)
    context = HydraContext(config_loader=loader, callbacks=None)
    launcher.setup(hydra_context=context, task_function=print, config=sweep)
    return launcher


@pytest.mark.parametrize(
    ("overrides", "remote"),
    [
        (["stack_on=ray"], {"num_cpus": 1, "num_gpus": 0}),
        (["stack_on=ray", "num_threads=2"], {"num_cpus": 2, "num_gpus": 0}),
        (["stack_on=gpus", "gpus_per_job=0.5", "cpus_per_job=3"], {"num_cpus": 3, "num_gpus": 0.5}),
    ],
)
def test_stacks_take_the_preset_knobs_of_the_sweep(tmp_path, overrides, remote):
    """A stack is one job of the stack_on preset, with the knobs this sweep sets for jobs."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    stack = _launcher(tmp_path, *overrides).stack_config()
    assert stack.hydra.launcher._target_.endswith("RayLauncher")
    assert {k: stack.hydra.launcher.ray.remote[k] for k in remote} == remote


def test_members_get_the_trainer_settings_of_the_stack_on_preset(tmp_path):
    """stack_on=slurm: members train under submitit's requeueing, as slurm's jobs do."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = _launcher(tmp_path, "stack_on=slurm")
    job = ["launcher=stacked", "stack_on=slurm", "seed=1"]  # as the sweeper hands them over
    try:
        member = launcher.compose_member(job, 0, launcher.stack_config()).cfg
    finally:
        HydraConfig.instance().cfg = None
    (plugin,) = member.trainer.plugins
    assert plugin._target_.endswith("SLURMEnvironment") and plugin.auto_requeue is False
    config = OmegaConf.load(tmp_path / "sweep" / "seed=1" / ".hydra" / "config.yaml")
    plugins = [OmegaConf.to_container(c.trainer.plugins) for c in (config, member)]
    assert plugins[0] == plugins[1]  # the job's record says what it ran with


def test_a_stack_that_raises_ends_its_job_not_the_sweep(make_cfg, tmp_path, monkeypatch, caplog):
    """As run_job for a solo job: the error is logged, the members' results are what their
    result.json files say, and the sweep's status (not a traceback) ends the sweep."""
    import fcn_research.train
    from fcn_research.job import run_stack
    from fcn_research.results import write_json_atomic
    from fcn_research.stacking import write_manifest

    def crash(cfgs, stack):
        write_json_atomic(Path(cfgs[0].output_dir) / "result.json", {"status": "running"})
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fcn_research.train, "train_stack", crash, raising=False)
    members = [
        make_cfg(
            f"seed={i}",
            f"hydra.job.num={i}",
            "hydra.job.id=0",
            f"hydra.runtime.output_dir='{tmp_path / str(i)}'",
            output_dir=tmp_path / str(i),
        )
        for i in range(2)
    ]
    manifest = tmp_path / "manifest.yaml"
    write_manifest(manifest, {"id": "stack_007", "members": 2}, members)
    results = run_stack(OmegaConf.create({"stack_manifest": str(manifest)}))
    assert [r["status"] for r in results] == ["running", "failed"]
    assert "stack_007 failed; the sweep goes on" in caplog.text
    assert "out of memory" in caplog.text


KILLED = [
    "-m",
    "launcher=stacked",
    "seed=0,1,2",
    "depth=2,3",
    "max_epochs=10",
    "data.num_samples=5000",
    "callbacks.model_checkpoint.min_interval_s=0",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


def _members(sweep: Path, depth: int) -> list[Path]:
    return [sweep / f"data.num_samples=5000,depth={depth},max_epochs=10,seed={s}" for s in range(3)]


@pytest.mark.slow
def test_a_killed_stacked_sweep_resumes_to_the_uninterrupted_result(run_cli, tmp_path):
    sweep = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "train.py"), *KILLED, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first, second = _members(sweep, 2), _members(sweep, 3)
    deadline = time.monotonic() + 240
    try:
        # Kill once the first stack is done and the second has member checkpoints.
        while time.monotonic() < deadline and proc.poll() is None:
            done = all((read_result(j) or {}).get("status") == "completed" for j in first)
            if done and all((j / "checkpoints" / "last.ckpt").exists() for j in second):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep ended before it could be killed; make it longer"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert all(read_result(j)["status"] == "running" for j in second)
    mtimes = [(j / "result.json").stat().st_mtime_ns for j in first]

    run_cli(*KILLED, f"hydra.sweep.dir={sweep}")
    assert [(j / "result.json").stat().st_mtime_ns for j in first] == mtimes  # skipped
    logs = "".join(p.read_text() for p in (sweep / ".stacks").glob("*/*.log"))
    assert "resuming 3 members from their checkpoints" in logs

    run_cli(*KILLED, f"hydra.sweep.dir={tmp_path / 'whole'}")
    for killed, whole in zip(second, _members(tmp_path / "whole", 3), strict=True):
        resumed, reference = read_result(killed), read_result(whole)
        assert resumed["status"] == reference["status"] == "completed"
        assert resumed["global_step"] == reference["global_step"]
        assert resumed["init"] == pytest.approx(reference["init"], rel=1e-5, abs=1e-6)
        assert resumed["metrics"] == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_an_experiment_run_stacked_keeps_its_outcome(run_cli, tmp_path):
    # zero_centering: 3 activations x 3 seeds, so 3 stacks of 3 seeds; docs/experiments.md's
    # outcome (tanh < zero-centred sigmoid < sigmoid in training loss) on every seed.
    sweep = tmp_path / "zc"
    run_cli(
        "-m",
        "experiment=zero_centering",
        "launcher=stacked",
        "max_epochs=4",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    )
    loss: dict[tuple[str, int], float] = {}
    for job in (p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")):
        result = read_result(job)
        assert result["status"] == "completed" and result["stack"]["members"] == 3
        values = dict(o.split("=", 1) for o in result["overrides"] if "=" in o)
        loss[values["activation"], int(values["seed"])] = result["metrics"]["train/loss"]
    assert len(loss) == 9
    for seed in (0, 1, 2):
        assert loss["tanh", seed] < loss["zero_centred_sigmoid", seed] < loss["sigmoid", seed]


def test_the_launcher_preset_says_what_members_may_differ_in(make_cfg):
    """conf/launcher/stacked.yaml's header agrees with stack_key: a data seed starts a stack."""
    header = (CONF_DIR / "launcher" / "stacked.yaml").read_text().split("\ndefaults:")[0]
    text = " ".join(line.lstrip("# ") for line in header.splitlines())
    may_differ = text.split("may differ in", 1)[1].split(";")[0]
    assert "seed" in may_differ and "data.seed" not in may_differ
    assert "a new data.seed starts a new stack" in text
    assert stack_key(make_cfg("data.seed=3")) != stack_key(make_cfg())
