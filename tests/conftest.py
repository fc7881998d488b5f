"""Shared fixtures: compose configs with Hydra's compose API; run the real CLI in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fcn_research.results import RESULT_FILE, validate_result
from fcn_research.run_dirs import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
# Small and quiet: tests train for a few epochs on CPU without progress bars.
FAST = ["max_epochs=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_repo() -> Iterator[None]:
    """Tests write only under tmp_path: fail the session if outputs/ in the repo grew."""
    outputs = ROOT / "outputs"
    before = set(outputs.rglob("*")) if outputs.exists() else set()
    yield
    after = set(outputs.rglob("*")) if outputs.exists() else set()
    new = sorted(str(p.relative_to(ROOT)) for p in after - before)
    assert not new, f"tests wrote into the repo: {new[:5]}"


@pytest.fixture(scope="session", autouse=True)
def data_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Generated data (data=mnist1d) is cached in a session tmp dir, not in ~/.cache; the
    CLI's subprocesses inherit it."""
    before = os.environ.get("FCN_CACHE_DIR")
    os.environ["FCN_CACHE_DIR"] = str(tmp_path_factory.mktemp("fcn_cache"))
    yield
    if before is None:
        os.environ.pop("FCN_CACHE_DIR", None)
    else:
        os.environ["FCN_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def every_result_json_follows_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, every result.json under its tmp_path follows ``Result``
    (docs/results.md). A file with ``env`` was written by a job and must be complete; a test's
    hand-made stand-in (a faked sweep) carries only some fields, each still checked; one that
    is not JSON (truncated on purpose) is the test's subject and is skipped."""
    # Taken before the test, so that tmp_path is still there when this checks it.
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is None:
        return
    for path in sorted(tmp_path.rglob(RESULT_FILE)):
        try:
            result = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        try:
            validate_result(result, complete=isinstance(result, dict) and "env" in result)
        except ValueError as err:
            pytest.fail(f"{path}: {err}")


@pytest.fixture
def make_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``make_cfg(*overrides, output_dir=...)``: the composed config, as ``train.py`` sees it."""

    def _make(*overrides: str, output_dir: Path | None = None, fast: bool = True) -> DictConfig:
        out = output_dir or tmp_path / "run"
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="train"):
            cfg = compose(
                "train",
                overrides=[
                    *(FAST if fast else []),
                    # Anything that resolves Hydra's dirs (e.g. submitit_folder) stays in tmp_path.
                    f"hydra.run.dir='{tmp_path / 'hydra_run'}'",
                    f"hydra.sweep.dir='{tmp_path / 'hydra_sweep'}'",
                    *overrides,
                    f"output_dir='{out}'",
                ],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _make
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, script="train.py")``: the real command, run with cwd=tmp_path."""

    def _run(
        *args: str, script: str = "train.py", timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(
            [sys.executable, str(ROOT / script), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return _run
