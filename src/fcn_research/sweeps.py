"""What a sweep's ``multirun.yaml`` says: the keys it sweeps and their values.

Hydra writes ``multirun.yaml`` in the sweep dir when a sweep starts; the HParams instrument
reads it from inside a job (which keys vary), the report and the learning-rate search from
outside. YAML is read with the safe loader (OmegaConf's): a sweep dir is shared and copied
between people, and nothing in it may run code.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf

MULTIRUN_FILE = "multirun.yaml"
# What the learning-rate search (``hparams_search=lr``) sets in every job it launches: the
# trial's lr and one of its seeds; the sweep's multirun.yaml lists neither as an axis.
TUNED_KEY = "lr"
SEED_KEY = "seed"
_PARSER = OverridesParser.create()


def parse_override(line: str) -> Override | None:
    """The override ``line`` as Hydra parses it; None if it is not one."""
    try:
        return _PARSER.parse_override(str(line))
    except HydraException:
        return None


def canonical_value(key: str, value: str) -> str:
    """``value`` as Hydra reads it: "depth=2" and "depth=02", "x=false" and "x=False" name
    the same job."""
    override = parse_override(f"{key}={value}")
    return str(override.value()) if override is not None else value


def swept_axes(multirun: Path) -> tuple[dict[str, list[str]], bool]:
    """Swept keys and their values from ``multirun.yaml``; False if some cannot be listed.

    As Hydra's sweeper does, a key set on the command line takes that value, not the one in
    ``hydra.sweeper.params`` (``experiment=x depth=7`` runs depth 7 only)."""
    cfg = OmegaConf.load(multirun)
    task = [str(x) for x in OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []]
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    parsed = [parse_override(line) for line in task]
    on_command_line = {o.key_or_group for o in parsed if o is not None}
    parsed += [parse_override(f"{k}={v}") for k, v in params.items() if k not in on_command_line]
    axes: dict[str, list[str]] = {}
    for override in parsed:
        if override is None or not override.is_sweep_override():
            continue
        key = override.key_or_group
        try:  # interval() sweeps (Optuna, Nevergrad) have no finite list of values
            axes[key] = [canonical_value(key, s) for s in override.sweep_string_iterator()]
        except (HydraException, TypeError, ValueError):
            axes[key] = []
    return axes, all(axes.values())
