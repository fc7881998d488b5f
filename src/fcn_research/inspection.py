"""The network at initialization, layer by layer, without training (the notebook's gradient_print).

Uses the instruments' own functions, so its numbers are the ``init`` values a training run
with the same overrides logs at step 0.
"""

from __future__ import annotations

import sys

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fcn_research.callbacks.gradients import grad_norms, probe_gradients
from fcn_research.callbacks.neurons import neuron_stats
from fcn_research.callbacks.probe import sample_probe, to_host
from fcn_research.train import CONF_DIR, build

USAGE = """usage: python scripts/inspect_init.py [override ...]
Same overrides as train.py (e.g. activation=sigmoid depth=7 initializer=constant_layer).
Prints, per Linear layer at initialization: gradient norm, dead and saturated fraction
and activation mean/std, all on the probe set (as training's step 0). Trains nothing."""


def _probe_size(cfg: DictConfig, instrument: str, default: int = 512) -> int:
    node = (cfg.get("callbacks") or {}).get(instrument) or {}
    return int(node.get("probe_size", default))


def inspect_init(cfg: DictConfig) -> dict[str, float]:
    """Step-0 instrument values for the composed ``cfg``: the ``init`` of a training run."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    x, y = datamodule.x_train, datamodule.y_train
    values = grad_norms(probe_gradients(module, *sample_probe(x, y, _probe_size(cfg, "gradients"))))
    probe_x, _ = sample_probe(x, y, _probe_size(cfg, "neurons"))
    values.update(neuron_stats(module.model, probe_x))
    return to_host(values)[0]  # one network: a stack of one


def table(values: dict[str, float], depth: int) -> Table:
    """A rich table: one row per Linear layer."""
    t = Table(title="network at initialization (step 0)")
    columns = [
        ("grad norm", "grad_norm"),
        ("dead", "neurons/dead_fraction"),
        ("saturated", "neurons/saturated_fraction"),
        ("act mean", "activations/mean"),
        ("act std", "activations/std"),
    ]
    t.add_column("layer", justify="right")
    for title, _ in columns:
        t.add_column(title, justify="right")
    for i in range(1, depth + 1):
        cells = []
        for _, prefix in columns:
            v = values.get(f"{prefix}/layer_{i:02d}")
            cells.append("–" if v is None else f"{v:.3g}")
        t.add_row(f"{i:02d}", *cells)
    return t


def main(argv: list[str] | None = None) -> None:
    """``python scripts/inspect_init.py [overrides]``."""
    overrides = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in overrides):
        print(USAGE)
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="inspect"):
        cfg = compose("train", overrides=overrides)
    values = inspect_init(cfg)
    console = Console()
    console.print(table(values, int(cfg.depth)))
    console.print(f"grad_norm/ratio_first_last = {values['grad_norm/ratio_first_last']:.3g}")
    console.print(f"neurons/dead_fraction = {values.get('neurons/dead_fraction', 0.0):.3g}")
