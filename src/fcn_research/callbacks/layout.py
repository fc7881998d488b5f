"""TensorBoard's Custom Scalars layout: one chart per layer, one line per run."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from fcn_research.callbacks.probe import layer_tag, member_writers, mlp_of
from fcn_research.tensorboard_adapter import write_custom_scalars

# Per-layer metrics: category title -> (tag prefix, whether every Linear has it or only the
# hidden layers), and the whole-network tags charted first in the category.
PER_LAYER = {
    "gradient norm per layer": ("grad_norm", False, ["grad_norm/ratio_first_last"]),
    "gradient RMS per weight, per layer": (
        "grad_rms",
        False,
        ["grad_rms/ratio_first_last", "grad_rms/ratio_hidden"],
    ),
    "dead fraction per layer": ("neurons/dead_fraction", True, ["neurons/dead_fraction"]),
    "saturated fraction per layer": (
        "neurons/saturated_fraction",
        True,
        ["neurons/saturated_fraction"],
    ),
    "low-gradient fraction per layer": (
        "neurons/low_gradient_fraction",
        True,
        ["neurons/low_gradient_fraction"],
    ),
    "activation std per layer": ("activations/std", True, []),
}
TRAINING = {
    "loss": ["Multiline", [r"^train/loss$", r"^val/loss$"]],
    "accuracy": ["Multiline", [r"^train/acc$", r"^val/acc$"]],
}


def scalars_layout(depth: int) -> dict[str, dict[str, list]]:
    """The layout for a network of ``depth`` Linear layers, in ``add_custom_scalars`` form.

    Each chart holds one tag, so its lines are the runs and its legend names them: a
    sweep's runs compare layer by layer. Layouts of runs of different depths merge in
    TensorBoard (charts of the same category are united), so the deepest run's layers all
    get a chart.
    """
    layout: dict[str, dict[str, list]] = {}
    for category, (prefix, hidden_only, whole) in PER_LAYER.items():
        layers = range(1, depth if hidden_only else depth + 1)
        if layers:  # a perceptron has no hidden layer
            tags = [*whole, *(layer_tag(prefix, i) for i in layers)]
            layout[category] = {tag: ["Multiline", [f"^{tag}$"]] for tag in tags}
    layout["training"] = TRAINING
    return layout


class ScalarsLayout(Callback):
    """Writes ``scalars_layout`` once per run, so depth effects read layer by layer in
    Custom Scalars."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return  # a resumed job: its run holds the layout its first process wrote
        layout = scalars_layout(len(mlp_of(pl_module).linears))
        for writer in member_writers(trainer):
            if writer is not None:  # a TensorBoard dashboard: other loggers have none
                write_custom_scalars(writer, layout)
