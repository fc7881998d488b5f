"""Bad input is refused before training: one line naming the key, the value, what is allowed."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from fcn_research.config_checks import check_config, refusal, shared_job_dirs
from fcn_research.data.mnist import FILE_NAMES
from fcn_research.results import read_result
from fcn_research.run_dirs import CONF_DIR
from fcn_research.train import train

FAST = ["callbacks=none", "max_epochs=1", "data.num_samples=200"]
LR = r"must be a finite number >= 0 \(the learning rate\)"
STEPS = r"steps_per_batch \(mini-batches per Lightning batch\) must be"
MAX_EPOCHS = r"must be an integer >= 1 or -1 \(-1: no limit, as in Lightning\)"
FINITE = r"must be a finite number"
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
    # Keys the run would not use: Hydra adds whatever a `+` asks for.
    "+widht=64": r"unknown key 'widht' \(did you mean 'width'\?\)$",
    "+depht=5": r"unknown key 'depht' \(did you mean 'depth'\?\)$",
    "+foo=1": r"unknown key 'foo' \(python train.py --cfg job lists the run's keys\)$",
    "+scheduler._target_=torch.optim.lr_scheduler.StepLR": (
        r"unknown key 'scheduler._target_': this run has no setting or config group 'scheduler'"
    ),
    "+trainer.max_epoch=3": (
        r"unknown key 'trainer.max_epoch': lightning.Trainer takes no argument 'max_epoch' "
        r"\(did you mean 'trainer.max_epochs'\?\)$"
    ),
    "+data.nosie=0.1": r"unknown key 'data.nosie': .*Playground2D .*did you mean 'data.noise'",
    "+callbacks.model_checkpoint.min_interval=2": (
        r"unknown key 'callbacks.model_checkpoint.min_interval': .*LastCheckpoint takes no "
        r"argument 'min_interval' \(did you mean 'callbacks.model_checkpoint.min_interval_s'\?\)"
    ),
    "+callbacks.mine.monitor=val/loss": (
        r"unknown key 'callbacks.mine.monitor': callbacks.mine has no _target_"
    ),
    "initializer=negative_layer +initializer.base.gain=2": (
        r"unknown key 'initializer.base.gain': fcn_research.initializers.Default takes no argument"
    ),
    # Values that passed the checks, then crashed in training or were read wrongly.
    "max_epochs=0": rf"max_epochs {MAX_EPOCHS}, got 0: 0 epochs train nothing",
    "trainer.max_epochs=0": rf"trainer.max_epochs {MAX_EPOCHS} or null .*, got 0: 0 epochs",
    "activation=leaky_relu activation.negative_slope=abc": (
        rf"activation.negative_slope {FINITE} \(an argument of torch.nn.LeakyReLU\), got 'abc'"
    ),
    "initializer=xavier_normal initializer.gain=-1": (
        r"initializer: gain must be a number >= 0 or 'auto' .*, got -1 \(.*XavierNormal\)"
    ),
    "initializer=xavier_normal initializer.gain=nan": (
        rf"initializer.gain {FINITE} or 'auto' \(.*XavierNormal\), got nan"
    ),
    "initializer=xavier_uniform initializer.gain=inf": rf"initializer.gain {FINITE} or 'auto'",
    "data.seed=1.5": r"data.seed must be an integer in \[0, 4294967295\], got 1.5",
    "data.seed=-1": r"data.seed must be an integer in \[0, 4294967295\], got -1",
    "width=1000000": (
        r"width=1000000 and depth=3 need at least [\d,]+ GiB to train \(.*\), more than this "
        r"machine's [\d,]+ GiB of memory; use a smaller width or depth"
    ),
    "depth=2 width=10000000000": r"width=10000000000 and depth=2 need at least",
    "initializer=negative_layer initializer.fix_bias=maybe": (
        r"initializer.fix_bias must be true or false \(.*NegativeLayer\), got 'maybe'"
    ),
    "initializer=constant_layer initializer.value=nan": rf"initializer.value {FINITE} .*got nan",
    "activation=swish_learnable activation.beta=nan": rf"activation.beta {FINITE} .*got nan",
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


def test_missing_data_files_are_refused_before_training(make_cfg, tmp_path):
    job = tmp_path / "job"
    cfg = make_cfg(
        "callbacks=none", "data=mnist", f"data.root={tmp_path / 'nodata'}", output_dir=job
    )
    with pytest.raises(Exception) as info:
        train(cfg)
    line = refusal(info.value)
    assert line is not None and line.startswith("mnist: 4 of its 4 IDX files are missing from ")
    assert "data.download=true" in line and "\n" not in line
    assert read_result(job)["error"] == line


# What Lightning and the groups legitimately take with `+` (or `++`): accepted.
ACCEPTED = [
    "+trainer.max_steps=5",
    "+trainer.gradient_clip_val=0.5 +trainer.limit_train_batches=2",
    "+trainer.strategy._target_=lightning.pytorch.strategies.SingleDeviceStrategy",
    "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping +callbacks.stop.monitor=x",
    "+callbacks.jacobian={_target_:fcn_research.callbacks.jacobian.JacobianSpectrum}",
    "+logger.csv._target_=lightning.pytorch.loggers.CSVLogger +logger.csv.save_dir=x",
    "+optimizer.weight_decay=0.1 +optimizer.amsgrad=true +optimizer.betas=[0.8,0.9]",
    "activation._target_=torch.nn.PReLU +activation.num_parameters=16",
    "+data.min_batches_per_epoch=2",
    "++width=16 ++data.noise=0.1",
    "initializer=xavier_normal initializer.gain=auto",
    "initializer=xavier_uniform initializer.gain=0",
    "trainer.max_epochs=-1 +trainer.max_steps=3",
    "data.seed=7",
]


@pytest.mark.parametrize("overrides", ACCEPTED)
def test_what_lightning_and_the_groups_take_is_accepted(make_cfg, overrides):
    check_config(make_cfg(*FAST, *overrides.split()))


def test_every_shipped_option_passes_the_checks(make_cfg, tmp_path, monkeypatch):
    # MNIST's files need only exist for the check: it reads nothing.
    monkeypatch.setenv("FCN_DATA_DIR", str(tmp_path / "data"))
    for folder in ("MNIST", "FashionMNIST"):
        (tmp_path / "data" / folder / "raw").mkdir(parents=True)
        for name in FILE_NAMES:
            (tmp_path / "data" / folder / "raw" / name).touch()
    options = [
        f"{group.name}={option.stem}"
        for group in sorted(CONF_DIR.iterdir())
        if group.is_dir()
        for option in sorted(group.glob("*.yaml"))
    ]
    assert len(options) > 50
    refused = {}
    for option in options:
        try:
            check_config(make_cfg(option))
        except Exception as err:
            refused[option] = refusal(err) or repr(err)
    assert not refused


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


def test_a_rule_has_one_message_for_the_config_and_the_library(make_cfg):
    """A user of the library classes meets the same rule, word for word, as the config check."""
    import torch

    from fcn_research.config_checks import ConfigError
    from fcn_research.data.base import TensorBatches
    from fcn_research.model import MLP

    with pytest.raises(ValueError) as direct:
        TensorBatches(torch.zeros(4, 2), torch.zeros(4), batch_size=2, group=0)
    with pytest.raises(ConfigError) as checked:
        check_config(make_cfg("steps_per_batch=0"))
    assert str(direct.value) == str(checked.value)
    assert re.fullmatch(rf"{STEPS} >= 1, got 0", str(direct.value))
    with pytest.raises(TypeError) as direct:
        MLP(2, 1, depth=2, width=4, activation=object)
    with pytest.raises(ConfigError) as checked:
        check_config(make_cfg("activation=relu", "activation._target_=builtins.object"))
    assert str(checked.value) == f"activation (builtins.object): {direct.value}"
