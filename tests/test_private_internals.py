"""Private Lightning, Hydra and TensorBoard-writer internals are used in one module each
(fcn_research.private_internals; the writer's in fcn_research.tensorboard_adapter), and each
still does what that module relies on in the installed versions."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import ModelCheckpoint

from fcn_research.private_internals import (
    checkpoint_dict,
    every_n_train_steps,
    set_logging_step,
    split_sweep_arguments,
)

SRC = Path(__file__).resolve().parents[1] / "src"
INTERNALS = "fcn_research/private_internals.py"
# Private names of Lightning, Hydra and torch's SummaryWriter -> the one module that uses them.
PRIVATE = {
    "_batches_that_stepped": INTERNALS,
    "_checkpoint_connector": INTERNALS,
    "_every_n_train_steps": INTERNALS,
    "_should_skip_saving_checkpoint": INTERNALS,
    "_save_checkpoint": INTERNALS,
    "_last_global_step_saved": INTERNALS,
    "_last_checkpoint_saved": INTERNALS,
    "hydra._internal": INTERNALS,
    "_get_file_writer": "fcn_research/tensorboard_adapter.py",
}


def _private_uses(path: Path) -> set[str]:
    """The private names of ``PRIVATE`` that the code of ``path`` touches (attribute reads and
    writes, method definitions, imports), and ``trainer...._x``: any private of a Trainer."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            if node.attr in PRIVATE:
                found.add(node.attr)
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if (
                isinstance(base, ast.Name)
                and base.id == "trainer"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.add(f"trainer...{node.attr}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in PRIVATE:
            found.add(node.name)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in node.names]
            if any(m.startswith("hydra._internal") for m in modules):
                found.add("hydra._internal")
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_private_internals_are_used_in_their_one_module_only(path):
    name = str(path.relative_to(SRC))
    # A Trainer's private (trainer...._x) belongs in the internals module too.
    stray = sorted(use for use in _private_uses(path) if PRIVATE.get(use, INTERNALS) != name)
    assert not stray, f"{name} uses {stray}: call fcn_research.private_internals instead"


def test_the_modules_that_hold_them_do_use_them():
    """The check above is not vacuous: it finds every private where it lives."""
    used = _private_uses(SRC / INTERNALS) | _private_uses(SRC / PRIVATE["_get_file_writer"])
    assert set(PRIVATE) <= used


def test_every_n_train_steps_reads_the_checkpoint_callbacks_setting():
    assert every_n_train_steps(ModelCheckpoint(every_n_train_steps=5)) == 5
    assert every_n_train_steps(ModelCheckpoint(every_n_epochs=1)) == 0


def test_split_sweep_arguments_expands_a_grid_as_hydras_basic_sweeper():
    overrides = OverridesParser.create().parse_overrides(["depth=3,5", "activation=relu,tanh"])
    (batch,) = split_sweep_arguments(overrides)
    assert sorted(batch) == [
        ["depth=3", "activation=relu"],
        ["depth=3", "activation=tanh"],
        ["depth=5", "activation=relu"],
        ["depth=5", "activation=tanh"],
    ]


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        self.log("x", 1.0)
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_logging_step_and_the_checkpoint_dict_on_a_trainer(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)))
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(_Tiny(), data)
    state = checkpoint_dict(trainer)
    assert state["global_step"] == 3 and "state_dict" in state and "optimizer_states" in state
    assert "optimizer_states" not in checkpoint_dict(trainer, weights_only=True)
    set_logging_step(trainer, 42)
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 42


def test_the_versions_table_is_what_is_installed_and_allowed():
    """docs/lightning.md's table: each package's installed version and pyproject's range."""
    import re
    from importlib.metadata import version

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "lightning.md").read_text()
    rows = re.findall(r"^\| (\S+) +\| (\S+) +\| `([^`]+)` +\|$", page, re.M)
    assert {name for name, _, _ in rows} == {"lightning", "hydra-core", "torch", "tensorboard"}
    pyproject = (root / "pyproject.toml").read_text()
    for name, tested, allowed in rows:
        assert version(name).split("+")[0] == tested, name
        assert f'"{name}{allowed}"' in pyproject, (name, allowed)
