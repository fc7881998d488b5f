"""A 2-D classifier's decision boundary with its training points, drawn as in TF Playground."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from fcn_research.callbacks.probe import layer_tag, mlp_of
from fcn_research.callbacks.schedule import EpochImages
from fcn_research.model import apply_rows
from fcn_research.tensorboard_adapter import write_image

# TensorFlow Playground's colours: orange for class 0 (negative), blue for class 1.
ORANGE = (245 / 255, 147 / 255, 34 / 255)
BLUE = (8 / 255, 119 / 255, 189 / 255)
PALETTE = torch.tensor(  # further classes (multi-class 2-D data)
    [ORANGE, BLUE, (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.40, 0.74), (0.55, 0.34, 0.29)]
)
MAX_POINTS = 500
GRID_SAMPLES = 64  # model evaluations per image side


def _grid(x: Tensor, resolution: int) -> tuple[Tensor, Tensor, Tensor]:
    lo, hi = x.min(0).values, x.max(0).values
    pad = (hi - lo) * 0.1
    lo, hi = lo - pad, hi + pad
    u = torch.linspace(0, 1, resolution, device=x.device)
    gx = lo[0] + u * (hi[0] - lo[0])
    gy = hi[1] - u * (hi[1] - lo[1])  # image rows run top (large y) to bottom
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1), lo, hi


def _shade(colour: Tensor, strength: Tensor) -> Tensor:
    """Blend from white towards ``colour`` (..., 3) by ``strength`` in [0, 1]."""
    return 1.0 - (1.0 - colour) * strength.unsqueeze(-1)


@torch.no_grad()
def render_boundary(
    pl_module: L.LightningModule, x: Tensor, y: Tensor, resolution: int = 160
) -> Tensor:
    """Per member, an RGB image in [0, 1] (M, 3, H, W): the predicted class map and the
    points on top; one evaluation of the stack draws them all."""
    model = mlp_of(pl_module)
    was_training = model.training
    model.eval()
    # The model sees a coarse grid; the probabilities are interpolated up to the image. A
    # decision map is smooth at this scale, and a wide network costs 1/6 of a full grid.
    samples = min(resolution, GRID_SAMPLES)
    grid, lo, hi = _grid(x, samples)
    out = model(grid)  # (M, samples^2, outputs)
    model.train(was_training)
    members = out.shape[0]
    palette = PALETTE.to(x.device)
    binary = out.shape[-1] == 1
    prob = torch.sigmoid(out) if binary else out.softmax(-1)
    prob = prob.transpose(1, 2).reshape(members, -1, samples, samples)
    prob = F.interpolate(prob, size=(resolution, resolution), mode="bilinear", align_corners=True)
    prob = prob.flatten(2).transpose(1, 2)  # (M, pixels, outputs)
    if binary:
        p = prob[..., 0]
        cls, conf = (p > 0.5).long(), (2 * p - 1).abs()
    else:
        conf, cls = prob.max(-1)
        conf = (conf - 1 / out.shape[-1]) / (1 - 1 / out.shape[-1])
    img = _shade(palette[cls % len(palette)], 0.15 + 0.55 * conf)
    img = img.reshape(members, resolution, resolution, 3)
    # Points: 3x3 squares in the class colour, darkened so they stand out.
    x, y = x[:MAX_POINTS], y[:MAX_POINTS].long()
    col = ((x[:, 0] - lo[0]) / (hi[0] - lo[0]) * (resolution - 1)).round().long()
    row = ((hi[1] - x[:, 1]) / (hi[1] - lo[1]) * (resolution - 1)).round().long()
    colour = palette[y % len(palette)] * 0.85
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r = (row + dr).clamp(0, resolution - 1)
            c = (col + dc).clamp(0, resolution - 1)
            img[:, r, c] = colour
    return img.permute(0, 3, 1, 2).clamp(0, 1)


@torch.no_grad()
def render_neuron_maps(
    pl_module: L.LightningModule, x: Tensor, resolution: int = 48
) -> list[Tensor]:
    """Per hidden layer, per member a tiled image of every unit's output over the input
    plane: (M, 3, H, W)."""
    model = mlp_of(pl_module)
    grid, _, _ = _grid(x, resolution)
    maps, h = [], grid
    for linear, act in zip(model.linears, model.activations, strict=False):
        h = apply_rows(act, linear(h))  # (M, pixels, units)
        v = h / h.abs().amax(1, keepdim=True).clamp_min(1e-12)  # each unit scaled to [-1, 1]
        colour = torch.where(v.unsqueeze(-1) > 0, PALETTE[1].to(x.device), PALETTE[0].to(x.device))
        tiles = _shade(colour, v.abs()).reshape(len(v), resolution, resolution, -1, 3)
        tiles = tiles.permute(0, 3, 4, 1, 2)  # (M, units, 3, res, res)
        n = tiles.shape[1]
        cols = min(n, 8)
        rows = -(-n // cols)
        canvas = torch.ones(
            len(v), 3, rows * (resolution + 2), cols * (resolution + 2), device=x.device
        )
        for k in range(n):
            r, c = divmod(k, cols)
            canvas[
                :,
                :,
                r * (resolution + 2) : r * (resolution + 2) + resolution,
                c * (resolution + 2) : c * (resolution + 2) + resolution,
            ] = tiles[:, k]
        maps.append(canvas)
    return maps


class DecisionBoundary(EpochImages):
    """On 2-D classification data, logs the image ``decision_boundary`` at step 0, at epoch
    ends on the schedule (counted in epochs) and at the end; with ``neuron_maps`` also
    ``neurons/maps/layer_XX``, each hidden unit's output over the plane.

    Args:
        resolution: image side in pixels.
        min_interval: smallest interval in epochs between images (see ``LogSchedule``).
        max_interval: largest interval in epochs.
        neuron_maps: also log the per-unit output maps.
    """

    def __init__(
        self,
        resolution: int = 160,
        min_interval: int = 1,
        max_interval: int = 100,
        neuron_maps: bool = False,
    ) -> None:
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {resolution}")
        super().__init__(min_interval, max_interval)
        self.resolution = resolution
        self.neuron_maps = neuron_maps

    def applies(self, datamodule: Any) -> bool:
        x = getattr(datamodule, "x_train", None)
        return x is not None and x.shape[1] == 2 and datamodule.task != "regression"

    def draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, runs: list[tuple[Any, int] | None]
    ) -> None:
        dm = trainer.datamodule
        images = {
            "decision_boundary": render_boundary(pl_module, dm.x_train, dm.y_train, self.resolution)
        }
        if self.neuron_maps:
            for i, canvas in enumerate(render_neuron_maps(pl_module, dm.x_train), 1):
                images[layer_tag("neurons/maps", i)] = canvas
        host = {tag: img.cpu() for tag, img in images.items()}
        for m, run in enumerate(runs):
            if run is not None:
                writer, step = run
                for tag, img in host.items():
                    write_image(writer, tag, img[m], step)
