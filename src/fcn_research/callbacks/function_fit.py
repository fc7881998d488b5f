"""A 1-D regressor's fitted curve against its training points, drawn with torch alone."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from fcn_research.callbacks.decision_boundary import BLUE, ORANGE
from fcn_research.callbacks.probe import mlp_of
from fcn_research.callbacks.schedule import EpochImages
from fcn_research.tensorboard_adapter import write_image

MAX_POINTS = 1000


def _draw(img: Tensor, cols: Tensor, rows: Tensor, colour: Tensor, radius: int) -> None:
    """Paint squares of side ``2 * radius + 1`` pixels centred on (rows, cols), in place."""
    height, width = img.shape[1:]
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r = (rows + dr).clamp(0, height - 1)
            c = (cols + dc).clamp(0, width - 1)
            img[:, r, c] = colour.unsqueeze(1)


@torch.no_grad()
def render_function_fit(
    pl_module: L.LightningModule, x: Tensor, y: Tensor, width: int = 320, height: int = 200
) -> Tensor:
    """Per member, an RGB image in [0, 1] (M, 3, H, W): the target's samples (orange) and the
    member's fit (blue); one evaluation of the stack draws them all."""
    model = mlp_of(pl_module)
    was_training = model.training
    model.eval()
    lo, hi = x.min(), x.max()
    grid = torch.linspace(0, 1, width, device=x.device) * (hi - lo) + lo
    fit = model(grid.unsqueeze(1)).squeeze(-1)  # (M, width)
    model.train(was_training)
    x, y = x[:MAX_POINTS, 0], y[:MAX_POINTS]
    # The vertical range follows the target, padded; a wild fit is clipped at the border.
    y_lo, y_hi = y.min(), y.max()
    pad = (y_hi - y_lo).clamp_min(1e-6) * 0.1
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def row(v: Tensor) -> Tensor:
        return ((y_hi - v) / (y_hi - y_lo) * (height - 1)).round().long().clamp(0, height - 1)

    img = torch.ones(3, height, width, device=x.device)
    cols = ((x - lo) / (hi - lo).clamp_min(1e-12) * (width - 1)).round().long()
    _draw(img, cols, row(y), torch.tensor(ORANGE, device=x.device), radius=1)
    # The fit as a polyline: fill every row between consecutive grid points.
    fit_rows = row(fit).unsqueeze(1)  # (M, 1, width)
    top = torch.minimum(fit_rows[..., :-1], fit_rows[..., 1:])
    bottom = torch.maximum(fit_rows[..., :-1], fit_rows[..., 1:])
    r = torch.arange(height, device=x.device).unsqueeze(1)
    mask = (r >= top) & (r <= bottom)
    mask = torch.cat([mask, mask[..., -1:]], -1) | (r == fit_rows)  # (M, height, width)
    blue = torch.tensor(BLUE, device=x.device).view(1, 3, 1, 1)
    return torch.where(mask.unsqueeze(1), blue, img.unsqueeze(0))


class FunctionFit(EpochImages):
    """On 1-D regression data, logs the image ``function_fit`` (training points and the
    network's curve over their range) at step 0, at epoch ends on the schedule (counted in
    epochs) and at the end. A no-op on any other data.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        min_interval: smallest interval in epochs between images (see ``LogSchedule``).
        max_interval: largest interval in epochs.
    """

    def __init__(
        self, width: int = 320, height: int = 200, min_interval: int = 1, max_interval: int = 100
    ) -> None:
        if width < 8 or height < 8:
            raise ValueError(f"width and height must be >= 8 pixels, got {width}x{height}")
        super().__init__(min_interval, max_interval)
        self.width, self.height = width, height

    def applies(self, datamodule: Any) -> bool:
        x = getattr(datamodule, "x_train", None)
        return x is not None and x.shape[1] == 1 and datamodule.task == "regression"

    def draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, runs: list[tuple[Any, int] | None]
    ) -> None:
        dm = trainer.datamodule
        img = render_function_fit(pl_module, dm.x_train, dm.y_train, self.width, self.height)
        for run, member_img in zip(runs, img.cpu(), strict=False):
            if run is not None:
                writer, step = run
                write_image(writer, "function_fit", member_img, step)
