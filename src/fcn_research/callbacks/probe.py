"""The probe set the instruments share, and how they log each member's values into its run."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from fcn_research.loggers import log_member_metrics, member_loggers
from fcn_research.model import StackedMLP
from fcn_research.tensorboard_adapter import writer_of


def probe_set(trainer: L.Trainer, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed sample of ``size`` training points (seeded), on the training device."""
    dm = trainer.datamodule
    x = getattr(dm, "x_train", None)
    y = getattr(dm, "y_train", None)
    if x is None or y is None:
        # A datamodule without in-memory tensors: take the first batches of an epoch.
        xs, ys, n = [], [], 0
        for xb, yb in trainer.train_dataloader:
            xs.append(xb)
            ys.append(yb)
            n += len(xb)
            if n >= size:
                break
        x, y = torch.cat(xs), torch.cat(ys)
    return sample_probe(x, y, size, seed)


def sample_probe(x: Tensor, y: Tensor, size: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``size`` samples of (x, y) drawn without replacement by a seeded permutation."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=generator)[:size].to(x.device)
    return x[idx], y[idx]


def mlp_of(pl_module: L.LightningModule) -> StackedMLP:
    """The stack of MLPs inside a LightningModule (its ``model`` attribute)."""
    model = getattr(pl_module, "model", None)
    if not isinstance(model, StackedMLP):
        raise TypeError(
            "instruments need pl_module.model to be an fcn_research StackedMLP, "
            f"got {type(model).__name__}"
        )
    return model


def member_writers(trainer: L.Trainer) -> list[SummaryWriter | None]:
    """Per member of the stack, the TensorBoard writer of its run (None: it has no TensorBoard
    logger), for what only TensorBoard shows (``fcn_research.tensorboard_adapter``); an empty
    list on ranks other than 0 (Lightning's loggers write only on rank 0: elsewhere their
    ``experiment`` is a dummy)."""
    if trainer.global_rank != 0:
        return []
    return [writer_of(loggers) for loggers in member_loggers(trainer)]


def layer_tag(prefix: str, layer: int) -> str:
    """``prefix/layer_XX`` with the layer zero-padded so TensorBoard sorts it."""
    return f"{prefix}/layer_{layer:02d}"


def to_host(values: dict[str, Tensor]) -> list[dict[str, float]]:
    """Per-member values ``{tag: (M,) tensor}`` as one dict of host floats per member, in one
    transfer."""
    if not values:
        return []
    flat = torch.stack([v.detach().float().reshape(-1) for v in values.values()]).cpu()
    return [dict(zip(values, col.tolist(), strict=True)) for col in flat.T]


def member_steps(
    trainer: L.Trainer, step: int, members: int, at_end: bool = False
) -> list[int | None]:
    """Per member, the step at which the stack's event at ``step`` goes into its run, or None:
    none for a member that stopped (diverged) before, but the end of training's (``at_end``),
    at its own stop step (``FCNModule.event_steps``)."""
    event_steps = getattr(trainer.lightning_module, "event_steps", None)
    return event_steps(step, at_end) if event_steps is not None else [step] * members


def write_members(
    trainer: L.Trainer, values: list[dict[str, float]], step: int, at_end: bool = False
) -> None:
    """Each member's scalars into every logger of its run (``log_metrics``), at
    ``member_steps``: TensorBoard, CSV, MLflow ... alike."""
    if trainer.global_rank == 0 and values:  # no values: an instrument with nothing to log
        log_member_metrics(trainer, values, member_steps(trainer, step, len(values), at_end))
