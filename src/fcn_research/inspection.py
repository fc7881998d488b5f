"""The network at initialization, layer by layer, without training (the notebook's gradient_print).

Uses the instruments' own functions, so its numbers are the ``init`` values a training run
with the same overrides logs at step 0.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from fcn_research.callbacks.gradients import grad_norms, probe_gradients
from fcn_research.callbacks.neurons import neuron_stats
from fcn_research.callbacks.probe import sample_probe, to_host
from fcn_research.callbacks.theory import theory_section
from fcn_research.run_dirs import CONF_DIR
from fcn_research.train import build

USAGE = """usage: python scripts/inspect_init.py [override ...]
Same overrides as train.py (e.g. activation=sigmoid depth=7 initializer=constant_layer).
Prints, per Linear layer at initialization: gradient norm, dead and saturated fraction
and activation mean/std, all on the probe set (as training's step 0), beside the mean-field
prediction of the activation std and of the gradient norm relative to the last layer
(or why the theory does not apply). Trains nothing."""


def _probe_size(cfg: DictConfig, instrument: str, default: int = 512) -> int:
    node = (cfg.get("callbacks") or {}).get(instrument) or {}
    return int(node.get("probe_size", default))


def inspect_init(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Step-0 instrument values for the composed ``cfg`` (the ``init`` of a training run) and
    the mean-field predictions for it (its ``theory``)."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    x, y = datamodule.x_train, datamodule.y_train
    values = grad_norms(probe_gradients(module, *sample_probe(x, y, _probe_size(cfg, "gradients"))))
    probe_x, _ = sample_probe(x, y, _probe_size(cfg, "neurons"))
    values.update(neuron_stats(module.model, probe_x))
    measured = to_host(values)[0]  # one network: a stack of one
    depth = len(module.model.linears)
    last = measured.get(f"grad_norm/layer_{depth:02d}") or float("nan")
    for i in range(1, depth + 1):
        measured[f"grad_norm/ratio_to_last/layer_{i:02d}"] = (
            measured[f"grad_norm/layer_{i:02d}"] / last
        )
    theory_x, _ = sample_probe(x, y, _probe_size(cfg, "theory"))
    return measured, theory_section(module.model, instantiate(cfg.initializer), theory_x)


def table(values: dict[str, float], depth: int, theory: dict[str, Any] | None = None) -> Table:
    """A rich table: one row per Linear layer; predicted columns from ``theory`` beside the
    measured ones ("n/a" where the theory does not apply)."""
    theory = theory or {}
    t = Table(title="network at initialization (step 0)")
    columns = [
        ("grad norm", "grad_norm", values),
        ("grad / last", "grad_norm/ratio_to_last", values),
        ("theory", "grad_norm/ratio_to_last", theory),
        ("dead", "neurons/dead_fraction", values),
        ("saturated", "neurons/saturated_fraction", values),
        ("act mean", "activations/mean", values),
        ("act std", "activations/std", values),
        ("theory", "activations/std", theory),
    ]
    t.add_column("layer", justify="right")
    for title, _, _ in columns:
        t.add_column(title, justify="right")
    for i in range(1, depth + 1):
        cells = []
        for _, prefix, source in columns:
            v = source.get(f"{prefix}/layer_{i:02d}")
            if source is theory and "not_applicable" in theory:
                cells.append("n/a")
            else:
                cells.append("–" if v is None else f"{v:.3g}")
        t.add_row(f"{i:02d}", *cells)
    return t


def theory_lines(values: dict[str, float], theory: dict[str, Any]) -> list[str]:
    """The theory's summary numbers beside the measured gradient ratio, or why it does not apply."""
    if "not_applicable" in theory:
        return [f"theory: n/a ({theory['not_applicable']})"]

    def num(key: str) -> str:
        v = theory.get(key, "n/a")  # left out where it does not apply: fixed_point says why
        return v if isinstance(v, str) else f"{v:.4g}"

    lines = [
        f"theory: sigma_w2 = {num('sigma_w2')}, sigma_b2 = {num('sigma_b2')}, "
        f"q* = {num('q_star')}, chi1 = {num('chi1')} ({num('phase')}), xi_q = {num('xi_q')}, "
        f"xi_c = {num('xi_c')}; {num('fixed_point')}",
        f"grad_norm/ratio_first_last: measured {values['grad_norm/ratio_first_last']:.3g}, "
        f"predicted {num('grad_norm/ratio_first_last')}",
    ]
    lines += [f"note: {note}" for note in theory.get("notes", [])]
    return lines


def main(argv: list[str] | None = None) -> None:
    """``python scripts/inspect_init.py [overrides]``."""
    overrides = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in overrides):
        print(USAGE)
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="inspect"):
        cfg = compose("train", overrides=overrides)
    values, theory = inspect_init(cfg)
    console = Console(width=max(120, Console().width))
    console.print(table(values, int(cfg.depth), theory))
    console.print(f"grad_norm/ratio_first_last = {values['grad_norm/ratio_first_last']:.3g}")
    console.print(f"neurons/dead_fraction = {values.get('neurons/dead_fraction', 0.0):.3g}")
    for line in theory_lines(values, theory):
        console.print(line, highlight=False, markup=False)
