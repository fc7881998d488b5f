"""Per-layer gradient norms and gradient / weight histograms of every Linear."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from fcn_research.callbacks.histograms import FixedRangeHistograms
from fcn_research.callbacks.probe import (
    layer_tag,
    mlp_of,
    probe_set,
    tensorboard,
    write_scalars,
)
from fcn_research.callbacks.schedule import StepInstrument
from fcn_research.model import MLP


def grad_norms(model: MLP) -> dict[str, Tensor]:
    """``grad_norm/layer_XX`` (L2 norm of each Linear's weight gradient), first/last ratio."""
    norms = {}
    for i, linear in enumerate(model.linears, 1):
        grad = linear.weight.grad
        norms[layer_tag("grad_norm", i)] = (
            grad.norm() if grad is not None else torch.zeros((), device=linear.weight.device)
        )
    first, last = norms[layer_tag("grad_norm", 1)], norms[layer_tag("grad_norm", len(norms))]
    norms["grad_norm/ratio_first_last"] = first / last
    return norms


def probe_gradients(pl_module: L.LightningModule, x: Tensor, y: Tensor) -> None:
    """Fill the weights' ``.grad`` with the gradient of the module's loss on (x, y)."""
    pl_module.zero_grad(set_to_none=True)
    with torch.enable_grad():
        loss, _ = pl_module.loss_and_predictions(x, y)
        loss.backward()


class GradientMonitor(StepInstrument):
    """Logs ``grad_norm/layer_XX``, ``grad_norm/ratio_first_last`` and the histograms
    ``grad/layer_XX`` and ``weight/layer_XX`` on the schedule.

    Gradients are read in ``on_before_optimizer_step``: the batch's gradient with the
    weights as they were for it, so step 0 is the network at initialization. At the end of
    training the gradient is taken on the probe set, once, for the final values.

    Args:
        min_interval: smallest logging interval in steps (see ``LogSchedule``).
        max_interval: largest logging interval in steps.
        histograms: also log gradient and weight histograms.
        bins: histogram bin count.
        probe_size: probe-set size for the final gradient.
    """

    def __init__(
        self,
        min_interval: int = 1,
        max_interval: int = 1000,
        histograms: bool = True,
        bins: int = 64,
        probe_size: int = 512,
    ) -> None:
        super().__init__(min_interval, max_interval)
        self.histograms = histograms
        self.hist = FixedRangeHistograms(bins)
        self.probe_size = probe_size

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> dict[str, float]:
        model = mlp_of(pl_module)
        norms = grad_norms(model)
        hist_values: dict[str, Tensor] = {}
        if self.histograms:
            for i, linear in enumerate(model.linears, 1):
                if linear.weight.grad is not None:
                    hist_values[layer_tag("grad", i)] = linear.weight.grad
                hist_values[layer_tag("weight", i)] = linear.weight
        rows, meta = self.hist.compute(hist_values) if hist_values else (None, [])
        # The event's one device-to-host transfer: norms and histograms together.
        flat = torch.stack([v.float() for v in norms.values()])
        if rows is not None:
            flat = torch.cat([flat, rows.flatten()])
        host = flat.cpu().tolist()
        scalars = dict(zip(norms, host[: len(norms)], strict=True))
        width = rows.shape[1] if rows is not None else 0
        host_rows = [
            host[len(norms) + k * width : len(norms) + (k + 1) * width] for k in range(len(meta))
        ]
        writer = tensorboard(trainer)
        if writer is not None:
            write_scalars(writer, scalars, step)
            if host_rows:
                self.hist.write(writer, list(hist_values), host_rows, meta, step)
        return scalars

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        x, y = probe_set(trainer, self.probe_size)
        probe_gradients(pl_module, x, y)
        self.final_metrics = self.measure(trainer, pl_module, trainer.global_step)
        pl_module.zero_grad(set_to_none=True)
