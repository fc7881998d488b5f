"""Per-layer gradient norms and gradient / weight histograms of every Linear."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from fcn_research.callbacks.histograms import FixedRangeHistograms
from fcn_research.callbacks.probe import (
    layer_tag,
    member_steps,
    member_writers,
    mlp_of,
    probe_set,
    write_members,
)
from fcn_research.callbacks.schedule import StepInstrument
from fcn_research.model import StackedMLP
from fcn_research.tensorboard_adapter import write_histograms


def trained_weight(linear: nn.Linear) -> Tensor:
    """The weight parameter the optimizer updates: ``weight`` itself, or, once
    ``torch.nn.utils.prune`` has pruned the layer, ``weight_orig`` (``weight`` is then the
    non-leaf product ``weight_orig * weight_mask`` and never holds a gradient)."""
    return getattr(linear, "weight_orig", linear.weight)


def probe_gradients(pl_module: L.LightningModule, x: Tensor, y: Tensor) -> list[Tensor]:
    """Per Linear, the gradient (M, out, in) of each member's loss on (x, y) with respect to
    the weight the optimizer updates (under pruning: masked, as the optimizer applies it).

    ``.grad`` is left untouched (``autograd.grad``), so a training step's gradient survives,
    and nothing reaches DDP's gradient hooks.
    """
    weights = [trained_weight(linear) for linear in mlp_of(pl_module).linears]
    with torch.enable_grad():
        loss, _ = pl_module.loss_and_predictions(x, y)
        # Members are independent: the sum's gradient is each member's own loss's.
        return list(torch.autograd.grad(loss.sum(), weights))


def _member_norms(g: Tensor) -> Tensor:
    """(M,): the L2 norm of each member's slice of a stacked tensor."""
    return g.flatten(1).norm(dim=1)


def grad_norms(grads: list[Tensor]) -> dict[str, Tensor]:
    """``grad_norm/layer_XX`` (L2 norm of each Linear's weight gradient), first/last ratio;
    ``grad_rms/layer_XX`` (its per-element RMS), first/last ratio and ``grad_rms/ratio_hidden``;
    each a (M,) tensor, one value per member of the stack.

    A norm grows with the matrix's size (Linear 1 may be 32x2, the last 1x32), so the norm
    ratio is not 1 even without any vanishing; the RMS ratio compares per-weight gradients,
    and ``ratio_hidden`` (Linear 2 over Linear depth-1, from depth 4: hidden-to-hidden
    matrices, equally shaped at a constant width) leaves the input and output layers out.
    """
    per_layer = [_member_norms(g) for g in grads]
    norms = {layer_tag("grad_norm", i): n for i, n in enumerate(per_layer, 1)}
    norms["grad_norm/ratio_first_last"] = per_layer[0] / per_layer[-1]
    rms = [n / g[0].numel() ** 0.5 for n, g in zip(per_layer, grads, strict=True)]
    norms.update({layer_tag("grad_rms", i): r for i, r in enumerate(rms, 1)})
    norms["grad_rms/ratio_first_last"] = rms[0] / rms[-1]
    if len(grads) >= 4:
        norms["grad_rms/ratio_hidden"] = rms[1] / rms[-2]
    return norms


class GradientMonitor(StepInstrument):
    """Logs ``grad_norm/layer_XX``, ``grad_norm/ratio_first_last``, their per-element RMS
    counterparts ``grad_rms/...`` (see ``grad_norms``) and the histograms ``grad/layer_XX``
    and ``weight/layer_XX``: at step 0, on the schedule and at the end.

    Every value is the gradient of the mean loss on the probe set (a fixed sample of the
    training data, the same for the whole run) for the weights as they are at that step, so
    step 0, the schedule and the final value measure the same thing on the same data. The
    gradient is taken with respect to the parameter the optimizer updates (under pruning
    ``weight_orig``, masked). The weight histograms show the effective (masked) weights.

    Args:
        min_interval: smallest logging interval in steps (see ``LogSchedule``).
        max_interval: largest logging interval in steps.
        histograms: also log gradient and weight histograms.
        bins: histogram bin count.
        probe_size: number of training samples in the probe set.
    """

    def __init__(
        self,
        min_interval: int = 1,
        max_interval: int = 1000,
        histograms: bool = True,
        bins: int = 64,
        probe_size: int = 512,
    ) -> None:
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {probe_size}")
        super().__init__(min_interval, max_interval)
        self.histograms = histograms
        self.hist = FixedRangeHistograms(bins)
        self.probe_size = probe_size
        self._probe: tuple[Tensor, Tensor] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Drawn here, once the data sits on the training device.
        self._probe = probe_set(trainer, self.probe_size)

    def measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, step: int
    ) -> list[dict[str, float]]:
        model: StackedMLP = mlp_of(pl_module)
        grads = probe_gradients(pl_module, *self._probe)
        norms = grad_norms(grads)
        hist_values: dict[str, Tensor] = {}
        if self.histograms:
            for i, (linear, grad) in enumerate(zip(model.linears, grads, strict=True), 1):
                hist_values[layer_tag("grad", i)] = grad
                hist_values[layer_tag("weight", i)] = linear.weight
        # The event's one device-to-host transfer: norms and histograms of every member.
        members = model.members
        flat = torch.stack([v.float() for v in norms.values()], 1)  # (M, tags)
        rows, meta = self.hist.compute(hist_values) if hist_values else (None, [])
        if rows is not None:
            flat = torch.cat([flat, rows.transpose(0, 1).flatten(1)], 1)
        host = flat.cpu().tolist()
        scalars = [dict(zip(norms, h[: len(norms)], strict=True)) for h in host]
        width = rows.shape[2] if rows is not None else 0
        # member_rows[m][k]: member m's row of histogram k.
        member_rows = [
            [h[len(norms) + k * width : len(norms) + (k + 1) * width] for k in range(len(meta))]
            for h in host
        ]
        tags = list(hist_values)
        self.hist.keep_ranges(
            tags, [[member_rows[m][k] for m in range(members)] for k in range(len(tags))]
        )
        write_members(trainer, scalars, step, self.at_end)
        if tags:  # histograms: TensorBoard only
            steps = member_steps(trainer, step, members, self.at_end)
            writers = member_writers(trainer)
            for writer, rows_m, at in zip(writers, member_rows, steps, strict=False):
                if writer is not None and at is not None:  # None: stopped (diverged) earlier
                    write_histograms(writer, self.hist.histograms(tags, rows_m, meta), at)
        return scalars

    def state_dict(self) -> dict[str, Any]:
        # A resumed run keeps its (widened) histogram bins, so histograms compare across it.
        return {**super().state_dict(), "hist_ranges": dict(self.hist.ranges)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.hist.ranges = {k: list(v) for k, v in state_dict.get("hist_ranges", {}).items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probe = None  # hold no tensors between runs
