"""train(cfg): it learns, it is deterministic, it writes result.json, bad input fails fast."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from fcn_research.hparams import flat_hparams
from fcn_research.results import STATUSES, read_result
from fcn_research.train import build, train

SMALL = ["width=16", "data.num_samples=400"]
# Learning checks need no instruments: only the checkpoint callback, so they stay fast.
BARE = ["callbacks=none", "max_epochs=10"]


@pytest.fixture
def run(make_cfg, tmp_path):
    """``run(*overrides, name=...)``: train into ``tmp_path/name`` and return the result."""

    def _run(*overrides: str, name: str = "run") -> dict:
        return train(make_cfg(*overrides, output_dir=tmp_path / name))

    return _run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moons_learns(run, seed):
    # 1000 samples, 10 epochs: val/acc 0.95-0.98 for seeds 0-2 (chance 0.5).
    result = run("data=moons", f"seed={seed}", *BARE)
    assert result["status"] == "completed"
    assert result["metrics"]["val/acc"] > 0.85, result["metrics"]


@pytest.mark.parametrize("seed", [0, 1])
def test_perceptron_cannot_solve_xor(run, seed):
    # A perceptron is a linear classifier: on XOR it stays near chance (0.5) however long
    # it trains; one hidden layer solves it.
    common = ["data=xor", f"seed={seed}", *BARE, *SMALL]
    perceptron = run("depth=1", *common, name="perceptron")
    assert perceptron["metrics"]["val/acc"] <= 0.75, perceptron["metrics"]
    mlp = run("depth=3", *common, name="mlp")
    assert mlp["metrics"]["val/acc"] > 0.9, mlp["metrics"]


def test_regression_logs_mse(run):
    result = run("data=function", "data.target=sin", "max_epochs=5", "callbacks=none", *SMALL)
    metrics = result["metrics"]
    assert "val/mse" in metrics and "val/acc" not in metrics
    # sin has variance 1/2 on [-pi, pi]: a network that learned anything beats predicting 0.
    assert metrics["val/mse"] < 0.25, metrics


def test_multiclass_digits_logs_acc(run):
    result = run("data=digits", "max_epochs=3", "width=32", "depth=2", "callbacks=none")
    metrics = result["metrics"]
    assert result["hparams"]["data"] == "digits"
    assert metrics["val/acc"] > 0.5, metrics  # chance is 0.1


def test_same_config_and_seed_same_metrics(run):
    overrides = ["data=moons", "max_epochs=3", "seed=7", *SMALL]
    first = run(*overrides, name="first")
    second = run(*overrides, name="second")
    assert first["metrics"] == second["metrics"]
    assert first["init"] == second["init"]
    other = run(*overrides[:2], "seed=8", *SMALL, name="other")
    assert other["metrics"] != first["metrics"]


def test_result_json(run, tmp_path):
    result = run("data=moons", "max_epochs=2", "depth=2", *SMALL, name="job")
    job = tmp_path / "job"
    on_disk = json.loads((job / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert on_disk["status"] == "completed" and on_disk["status"] in STATUSES
    assert isinstance(on_disk["overrides"], list)
    assert "depth=2" in on_disk["overrides"]
    hparams = on_disk["hparams"]
    for key in ("activation", "depth", "width", "initializer", "optimizer", "lr", "seed", "data"):
        assert key in hparams, key
    assert hparams["activation"] == "relu" and hparams["depth"] == 2 and hparams["width"] == 16
    assert hparams["data"] == "moons" and hparams["optimizer"] == "adam"
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in hparams.values())
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert isinstance(on_disk["metrics"][key], float), key
    assert isinstance(on_disk["init"], dict)
    assert on_disk["epochs"] == 2
    assert on_disk["wall_s"] > 0
    assert list(job.glob("events.out.tfevents.*"))
    assert (job / "checkpoints" / "last.ckpt").exists()
    leftovers = [p.name for p in job.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temp files left behind: {leftovers}"


def hparams_dashboard(job: Path) -> dict:
    """The hparams a run's TensorBoard events show on the HParams dashboard."""
    accumulator = EventAccumulator(str(job))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {key: MessageToDict(value) for key, value in info.hparams.items()}


def test_hparams_are_the_values_used(run, make_cfg, tmp_path):
    overrides = [
        "data=moons",
        "depth=2",
        *SMALL,
        "optimizer.lr=0.1",  # the group's own values, not the top-level knobs they default to
        "data.batch_size=16",
        "data.seed=5",
        "trainer.max_epochs=1",
        "initializer=constant_layer",
        "initializer.base._target_=fcn_research.initializers.XavierNormal",
    ]
    result = run(*overrides, name="job")
    expected = {
        "lr": 0.1,
        "batch_size": 16,
        "max_epochs": 1,
        "seed": 0,
        "data.seed": 5,
        "initializer": "constant_layer",
        "initializer.base": "XavierNormal",
    }
    assert {k: result["hparams"].get(k) for k in expected} == expected
    assert result["epochs"] == 1
    shown = hparams_dashboard(tmp_path / "job")
    assert {k: shown.get(k) for k in expected} == expected
    datamodule, module = build(make_cfg(*overrides))
    assert datamodule.batch_size == 16 and datamodule.seed == 5
    assert module.configure_optimizers().param_groups[0]["lr"] == 0.1


def test_hparams_name_a_replaced_class_and_a_class_default(make_cfg):
    hparams = flat_hparams(make_cfg("activation=relu", "activation._target_=torch.nn.Tanh"))
    assert hparams["activation"] == "Tanh"
    hparams = flat_hparams(make_cfg("optimizer=adam", "~optimizer.lr"))
    assert hparams["lr"] == 1e-3  # torch.optim.Adam's default, which it then uses


def test_completed_job_is_not_retrained(run):
    first = run("max_epochs=1", *SMALL)
    again = run("max_epochs=1", *SMALL)
    assert again == first


def test_divergence_is_reported(run, tmp_path):
    result = run("optimizer=sgd", "lr=1e12", "data=function", "max_epochs=3", *SMALL)
    assert result["status"] == "diverged"
    json.loads((tmp_path / "run" / "result.json").read_text())  # NaN written as valid JSON


BAD_INPUTS = {
    "depth=0": (["depth=0"], r"depth must be an integer >= 1.*got 0"),
    "width=0": (["width=0"], r"width must be >= 1.*got 0"),
    "target_layer": (
        ["initializer=constant_layer", "initializer.target_layer=5", "depth=3"],
        r"target_layer=5 is out of range.*1\.\.3",
    ),
    "too_few_samples": (
        ["data.num_samples=2", "data.val_fraction=0.2"],
        r"2 samples are too few for val_fraction=0.2",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_before_training(make_cfg, tmp_path, case):
    overrides, message = BAD_INPUTS[case]
    cfg = make_cfg(*overrides, output_dir=tmp_path / "bad")
    with pytest.raises(ValueError, match=message):
        train(cfg)
    result = read_result(tmp_path / "bad")
    assert result is None or result["status"] == "failed"
    if result is not None:
        assert result["epochs"] == 0
        assert re.search(message, result["error"]), result["error"]
    assert not list(Path(tmp_path / "bad").glob("events.out.tfevents.*")), "training started"
