"""The commands behind the generated documentation (docs/experiments.md, the README's number
blocks): each is the command a reader types, run through the real CLI in a subprocess, with
its outputs in a directory of the caller's choosing."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# The placeholder a shown command uses for the sweep that the command before it wrote.
SWEEP = "outputs/sweeps/<sweep>"


def run_script(script: str, args: Sequence[str], cwd: Path) -> str:
    """``python <script> <args>`` from the repository, run in ``cwd``; its stdout (raises
    ``subprocess.CalledProcessError`` with its output if it fails)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def run_sweep(overrides: Sequence[str], sweep_dir: Path, cwd: Path) -> str:
    """``python train.py -m <overrides>`` into ``sweep_dir`` (no progress bar). A sweep dir
    that already holds completed jobs is resumed: they are skipped."""
    args = ["-m", *overrides, "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"]
    return run_script("train.py", args, cwd)


def run_shown(command: str, sweep_dir: Path, cwd: Path) -> str:
    """Run ``command`` as written in the docs (``python <script> ...``): a ``train.py -m``
    sweep writes into ``sweep_dir``, and ``outputs/sweeps/<sweep>`` in a later command is it."""
    python, script, *args = shlex.split(command)
    if python != "python":
        raise ValueError(f"{command!r}: expected 'python <script> ...'")
    if script == "train.py" and args[:1] == ["-m"]:
        return run_sweep(args[1:], sweep_dir, cwd)
    return run_script(script, [str(sweep_dir) if a == SWEEP else a for a in args], cwd)
