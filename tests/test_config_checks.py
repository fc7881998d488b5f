"""Bad input is refused before training: one line naming the key, the value, what is allowed."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from fcn_research.config_checks import refusal, shared_job_dirs
from fcn_research.results import read_result
from fcn_research.train import train

FAST = ["callbacks=none", "max_epochs=1", "data.num_samples=200"]
LR = r"must be a finite number >= 0 \(the learning rate\)"
STEPS = r"steps_per_batch \(mini-batches per Lightning batch\) must be"
MAX_EPOCHS = r"must be an integer >= -1 \(-1: no limit, as in Lightning\)"
BAD = {
    "depth=abc": r"depth must be an integer >= 1 \(1 = perceptron\), got 'abc'",
    "depth=-1": r"depth must be an integer >= 1 \(1 = perceptron\), got -1",
    "width=[0,3]": r"width must be >= 1 for every hidden layer, got \[0, 3\]",
    "seed=-1": r"seed must be an integer in \[0, 4294967295\], got -1",
    "seed=1.5": r"seed must be an integer in \[0, 4294967295\], got 1.5",
    "lr=abc": rf"lr {LR}, got 'abc'",
    "lr=-1": rf"lr {LR}, got -1",
    "optimizer.lr=-1": rf"optimizer.lr {LR}, got -1",
    "batch_size=0": r"batch_size must be an integer >= 1, got 0",
    "data.batch_size=abc": r"data.batch_size must be an integer >= 1, got 'abc'",
    "max_epochs=abc": rf"max_epochs {MAX_EPOCHS}, got 'abc'",
    "trainer.max_epochs=-2": rf"trainer.max_epochs {MAX_EPOCHS} or null .*, got -2",
    "num_threads=0": r"num_threads must be an integer >= 1 or null \(torch's default\), got 0",
    "steps_per_batch=0": rf"{STEPS} >= 1, got 0",
    "steps_per_batch=1.5": rf"{STEPS} an integer, got 1.5",
    "resume=maybe": r"resume must be true or false, got 'maybe'",
    "optimizer=sgd optimizer.momentum=-1": (
        r"optimizer \(torch\.optim\.SGD\): Invalid momentum value: -1; see torch\.optim\.SGD's "
        "documentation for the allowed values"
    ),
    "activation=maxout activation.pool_size=0": (
        r"activation \(fcn_research\.activations\.Maxout\): Maxout pool_size must be >= 1, got 0"
    ),
    "data.noise=-1": r"data: noise must be >= 0, got -1 \(fcn_research\.data\.\S*Playground2D\)",
    "initializer=constant_layer initializer.target_layer=5": (
        r"ConstantLayer: target_layer=5 is out of range; .*1\.\.3"
    ),
    "trainer.accelerator=foo": r"trainer: .*invalid accelerator name: `accelerator='foo'`",
}


@pytest.mark.parametrize("overrides", sorted(BAD))
def test_bad_value_is_refused_in_one_line(make_cfg, tmp_path, overrides):
    job = tmp_path / "job"
    cfg = make_cfg(*FAST, *overrides.split(), output_dir=job)
    with pytest.raises(Exception) as info:
        train(cfg)
    line = refusal(info.value)
    assert line is not None, f"not refused as a config error: {info.value!r}"
    assert re.match(BAD[overrides], line), line
    assert "\n" not in line
    result = read_result(job)
    assert result["status"] == "failed" and result["error"] == line
    assert result["epochs"] == 0
    assert not list(job.glob("events.out.tfevents.*")), "training started"
    assert not (job / "checkpoints").exists()


def _sweep_cfg(make_cfg, *task: str, params: dict[str, str] | None = None, experiment=None):
    """The composed config as a multirun sees it: ``task`` as the command line's overrides."""
    composed = make_cfg(*([f"experiment={experiment}"] if experiment else []))
    cfg = OmegaConf.create(OmegaConf.to_container(composed, resolve=False))  # writable copy
    cfg.hydra.overrides.task = list(task)
    if params:
        cfg.hydra.sweeper.params = {**(cfg.hydra.sweeper.params or {}), **params}
    return cfg


def test_sweep_of_an_excluded_key_would_share_dirs(make_cfg):
    message = shared_job_dirs(_sweep_cfg(make_cfg, "depth=2", "trainer.accelerator=cpu,auto"))
    assert message is not None and "sweeps trainer.accelerator" in message
    assert "exclude_keys" in message
    # Swept through the sweeper's params, as experiment=pruning sweeps its amount.
    cfg = _sweep_cfg(
        make_cfg, "experiment=pruning", params={"num_threads": "1,2"}, experiment="pruning"
    )
    message = shared_job_dirs(cfg)
    assert message is not None and message.startswith("num_threads=1,2 sweeps num_threads")


def test_sweeps_with_distinct_job_dirs_pass(make_cfg):
    assert shared_job_dirs(_sweep_cfg(make_cfg, "activation=relu,tanh", "depth=3,5")) is None
    assert shared_job_dirs(_sweep_cfg(make_cfg, "depth=2,3", "num_threads=2")) is None
    pruning = _sweep_cfg(make_cfg, "experiment=pruning", experiment="pruning")
    assert shared_job_dirs(pruning) is None
    # Nothing names the jobs: their dirs are job_0, job_1.
    assert shared_job_dirs(_sweep_cfg(make_cfg, "num_threads=1,2")) is None
