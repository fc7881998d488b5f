"""The library's floors: each module imports only from its own floor or the floors below it,
no modules import each other in a circle, and nothing in the library imports the programs.

The floors, lowest first, are what docs/architecture.md draws; a new module takes its place
here, so this list and the page stay the one picture of the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A name stands for the module and everything below it (``data`` = the package).
FLOORS: list[tuple[str, list[str]]] = [
    (
        "foundations: files, specs and formulas (no Lightning)",
        ["results", "job_lock", "run_dirs", "stack_spec", "sweeps", "theory"],
    ),
    (
        "building blocks: the network, its data, its optimizer, its checks",
        [
            "activations",
            "model",
            "initializers",
            "data",
            "stacked_optim",
            "module",
            "config_checks",
            "loggers",
            "tensorboard_adapter",
            "private_internals",
        ],
    ),
    (
        "instruments: Lightning callbacks and what they record",
        ["callbacks", "recording", "evaluation", "trainer_options"],
    ),
    (
        "training: a job, the fit of a stack, hparams, resume, searches",
        [
            "train",
            "stacking",
            "job",
            "fit",
            "hparams",
            "resume",
            "inspection",
            "born_dead",
            "lr_search",
        ],
    ),
    ("analysis: a sweep dir into tables, statistics and figures", ["report"]),
    ("entry points: the Hydra app, its callbacks and plugins", ["cli", "sweep_status"]),
]
PROGRAMS = "fcn_research.programs"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The project modules that ``name`` imports (at any depth of its code)."""
    found = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in MODULES and c != name}
    return found


def _floor(name: str) -> int | None:
    """The floor of a library module; None for the package root, programs and plugins."""
    if name == "fcn_research" or name.startswith((PROGRAMS, "hydra_plugins")):
        return None
    short = name.removeprefix("fcn_research.")
    for level, (_, members) in enumerate(FLOORS):
        if any(short == m or short.startswith(f"{m}.") for m in members):
            return level
    raise AssertionError(f"{name} is on no floor: add it to FLOORS in {Path(__file__).name}")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_nothing_from_a_floor_above_it(name):
    """Nothing on a lower floor reaches up; the programs are imported by no library module."""
    own = _floor(name)
    for imported in _imports(name):
        if imported.startswith(PROGRAMS):
            assert name.startswith(PROGRAMS), f"{name} imports the program {imported}"
            continue
        theirs = _floor(imported)
        if own is None or theirs is None:
            continue
        assert theirs <= own, (
            f"{name} ({FLOORS[own][0].split(':')[0]}) imports {imported} "
            f"({FLOORS[theirs][0].split(':')[0]}), a floor above it"
        )


def test_no_modules_import_each_other_in_a_circle():
    graph = {name: _imports(name) for name in MODULES}
    # A package imports its own modules to re-export them; that is not a circle of ideas.
    graph = {
        name: {i for i in deps if not (i.startswith(f"{name}.") or name.startswith(f"{i}."))}
        for name, deps in graph.items()
    }
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_architecture_page_names_every_module_on_its_floor():
    """docs/architecture.md draws the floors above: each floor's heading and each module on it."""
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    sections = page.split("\n## ")[1:]
    for level, (title, members) in enumerate(FLOORS):
        section = sections[level]
        assert section.lower().startswith(f"{level + 1}. {title.split(':')[0]}"), section[:60]
        missing = [m for m in members if f"`{m}`" not in section]
        assert not missing, f"docs/architecture.md's floor {level + 1} does not name {missing}"
