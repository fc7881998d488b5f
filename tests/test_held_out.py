"""The test split: evaluated once after training, on the last or the best validation weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fcn_research.train import build, train

DIGITS = ["data=digits", "callbacks=none", "max_epochs=4", "width=16"]


def evaluate(cfg, ckpt: Path) -> tuple[float, float]:
    """(loss, accuracy) of the checkpoint's weights on the datamodule's test split."""
    datamodule, module = build(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    module.eval()
    with torch.no_grad():
        loss, pred = module.loss_and_predictions(datamodule.x_test, datamodule.y_test)
    return loss.item(), (pred.argmax(-1) == datamodule.y_test).float().mean().item()


def test_last_weights_are_tested_once_at_the_final_step(make_cfg, tmp_path):
    out = tmp_path / "job"
    cfg = make_cfg(*DIGITS, output_dir=out)
    result = train(cfg)
    loss, acc = evaluate(cfg, out / "checkpoints" / "last.ckpt")
    assert result["metrics"]["test/acc"] == pytest.approx(acc, abs=1e-6)
    assert result["metrics"]["test/loss"] == pytest.approx(loss, rel=1e-5)
    assert acc > 0.8  # digits, 4 epochs: learnt, so the split is not noise
    events = EventAccumulator(str(out))
    events.Reload()
    for tag in ("test/acc", "test/loss"):
        (point,) = events.Scalars(tag)
        assert point.step == result["global_step"]
        assert point.value == pytest.approx(result["metrics"][tag], rel=1e-5)


def test_best_val_weights_are_kept_and_tested(make_cfg, tmp_path):
    out = tmp_path / "job"
    # A learning rate that makes validation go up and down, so best and last differ.
    cfg = make_cfg(*DIGITS, "max_epochs=8", "lr=0.2", "test_weights=best_val", output_dir=out)
    result = train(cfg)
    best = out / "checkpoints" / "best_val.ckpt"
    loss, acc = evaluate(cfg, best)
    assert result["metrics"]["test/acc"] == pytest.approx(acc, abs=1e-6)
    assert result["metrics"]["test/loss"] == pytest.approx(loss, rel=1e-5)
    events = EventAccumulator(str(out))
    events.Reload()
    val = [p.value for p in events.Scalars("val/acc")]
    state = torch.load(best, map_location="cpu", weights_only=False)
    assert state["epoch"] == val.index(max(val))  # the best validation epoch's weights
    _, last_acc = evaluate(cfg, out / "checkpoints" / "last.ckpt")
    assert state["epoch"] != len(val) - 1 and last_acc != acc, "best and last must differ here"


def test_bad_test_weights_is_refused(make_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"test_weights must be 'last'.*'best_val'.*got 'best'"):
        train(make_cfg(*DIGITS, "test_weights=best", output_dir=tmp_path / "job"))


def test_regression_and_a_dataset_without_test_split(make_cfg, tmp_path):
    fit = train(make_cfg("data=function", "callbacks=none", output_dir=tmp_path / "fit"))
    assert {"test/mse", "test/loss"} <= set(fit["metrics"])
    assert fit["metrics"]["test/mse"] == pytest.approx(fit["metrics"]["test/loss"], rel=1e-5)
    xor = train(make_cfg("data=xor_table", "callbacks=none", output_dir=tmp_path / "xor"))
    assert xor["status"] == "completed"
    assert not [k for k in xor["metrics"] if k.startswith("test/")]


def test_hparams_yaml_holds_the_runs_hparams(make_cfg, tmp_path):
    out = tmp_path / "job"
    result = train(make_cfg(*DIGITS, "depth=2", "seed=7", output_dir=out))
    saved = yaml.safe_load((out / "hparams.yaml").read_text())
    assert saved == result["hparams"]
    assert (saved["depth"], saved["seed"], saved["data"]) == (2, 7, "digits")
