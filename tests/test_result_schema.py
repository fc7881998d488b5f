"""result.json's schema in code (``fcn_research.results.Result``) and on its docs page:
``validate_result`` names the field it refuses, a trained job's file passes it complete, and
docs/results.md describes exactly the fields the TypedDict has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from fcn_research.results import (
    STATUSES,
    InvalidResult,
    JobEnv,
    Result,
    StackInfo,
    read_result,
    validate_result,
)
from fcn_research.train import train

ROOT = Path(__file__).resolve().parents[1]
GOOD: dict[str, Any] = {
    "status": "completed",
    "overrides": ["activation=relu", "depth=3"],
    "hparams": {"activation": "relu", "depth": 3, "lr": 0.01, "width": "[64, 16]", "x": None},
    "metrics": {"val/acc": 0.9, "train/loss": None, "neurons/dead_fraction": 0},
    "init": {"grad_norm/layer_01": 0.05},
    "epochs": 2,
    "wall_s": 1.5,
    "env": {"host": "h", "CUDA_VISIBLE_DEVICES": None, "torch_threads": 1},
    "global_step": 30,
    "theory": {"chi1": 0.9, "xi_c": "inf", "phase": "ordered", "notes": ["width < 100"]},
    "task": "binary",
    "num_classes": 2,
    "stack": {"id": "stack_000", "members": 4},
    "stack_wall_s": 6.0,
    "error": "ConfigError: depth must be >= 1",
}


def test_a_good_result_passes():
    validate_result(GOOD)
    validate_result({"status": "running"}, complete=False)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "done"}, "'status'"),
        ({"overrides": "depth=3"}, "'overrides'"),
        ({"metrics": {"val/acc": "0.9"}}, "'metrics.val/acc'"),
        ({"init": {"grad_norm/layer_01": True}}, "'init.grad_norm/layer_01'"),
        ({"hparams": {"width": [64, 16]}}, "'hparams.width'"),
        ({"epochs": -1}, "'epochs'"),
        ({"global_step": 1.5}, "'global_step'"),
        ({"wall_s": "1 s"}, "'wall_s'"),
        ({"task": "classification"}, "'task'"),
        ({"num_classes": 0}, "'num_classes'"),
        ({"env": {"host": "h"}}, "'env'"),
        ({"env": {**GOOD["env"], "torch_threads": "1"}}, "'env.torch_threads'"),
        ({"stack": {"id": "s"}}, "'stack'"),
        ({"stack": {"id": "s", "members": 0}}, "'stack.members'"),
        ({"theory": {"notes": [1]}}, "'theory.notes'"),
        ({"error": None}, "'error'"),
        ({"epoch": 2}, "'epoch'"),
    ],
)
def test_a_bad_field_is_named(change, field):
    with pytest.raises(InvalidResult, match=re.escape(f"result.json field {field}")):
        validate_result({**GOOD, **change})


def test_a_missing_field_is_named_unless_partial():
    partial = {k: v for k, v in GOOD.items() if k != "env"}
    with pytest.raises(InvalidResult, match="field 'env' is missing"):
        validate_result(partial)
    validate_result(partial, complete=False)
    with pytest.raises(InvalidResult, match="'status'"):
        validate_result({"epochs": 1}, complete=False)


def test_a_trained_jobs_result_is_complete(make_cfg, tmp_path):
    """The file a real job writes passes the strict check, with the fields a fit adds."""
    train(make_cfg("max_epochs=1", "data.num_samples=64", output_dir=tmp_path / "job"))
    result = read_result(tmp_path / "job")
    validate_result(result)
    assert result["status"] == "completed"
    assert {"global_step", "theory", "task", "num_classes"} <= set(result)


def _documented_fields(page: str, heading: str) -> set[str]:
    """The backticked names in the first column of the table under ``heading``."""
    section = page.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return {m[1] for m in re.finditer(r"^\| `([\w.]+)`", section, re.M) if "." not in m[1]} | {
        m[1] for m in re.finditer(r"^\| `(\w+\.\w+)`", section, re.M)
    }


def test_the_docs_page_lists_every_field_and_no_other():
    page = (ROOT / "docs" / "results.md").read_text()
    fields = _documented_fields(page, "Fields")
    expected = set(Result.__annotations__)
    expected |= {f"env.{k}" for k in JobEnv.__annotations__}
    expected |= {f"stack.{k}" for k in StackInfo.__annotations__}
    assert fields == expected
    for status in STATUSES:
        assert f"`{status}`" in page
