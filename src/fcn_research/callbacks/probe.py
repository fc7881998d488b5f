"""The probe set and the TensorBoard writer that the instruments share."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

from fcn_research.model import StackedMLP


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


def member_writers(trainer: L.Trainer) -> list[Any | None]:
    """Per member of the stack, its TensorBoard SummaryWriter (a member's run: the
    TensorBoard loggers in member order); an empty list on ranks other than 0 (Lightning's
    logger writes only on rank 0: elsewhere its ``experiment`` is a dummy) or without a
    TensorBoard logger."""
    if trainer.global_rank != 0:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


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
    """Each member's scalars into its own run, one record per member, at ``member_steps``."""
    steps = member_steps(trainer, step, len(values), at_end)
    for writer, member, at in zip(member_writers(trainer), values, steps, strict=False):
        if at is not None:
            write_scalars(writer, member, at)


def write_scalars(writer: Any, values: dict[str, float], step: int) -> None:
    """An event's scalars as one TensorBoard record: one write, not one per tag (7x cheaper)."""
    summary = Summary(value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()])
    writer._get_file_writer().add_summary(summary, step)
