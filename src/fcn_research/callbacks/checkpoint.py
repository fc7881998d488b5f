"""The resume checkpoint: one ``last.ckpt``, rewritten at epoch ends, at most every few seconds."""

from __future__ import annotations

import math
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

# Callback state that holds one entry per member (the instruments' step-0 values and
# histogram ranges): split and joined with the members.
MEMBER_STATE_KEYS = ("init_metrics", "hist_ranges")
# The module's per-member lists (FCNModule.on_save_checkpoint): split and joined likewise.
MEMBER_LISTS = ("members_diverged", "members_stopped_at")
# Optimizer hyperparameters that stacked optimizers keep as one value per member.
MEMBER_HPARAMS = ("lr", "momentum", "dampening", "weight_decay", "betas", "eps")


def _slice_state(value: Any, m: int) -> Any:
    """Member ``m``'s part of a per-member callback state value."""
    if isinstance(value, list):
        return value[m : m + 1]
    if isinstance(value, dict):
        return {k: _slice_state(v, m) for k, v in value.items()}
    return value


def _join_state(values: list[Any]) -> Any:
    if isinstance(values[0], list):
        return [v for value in values for v in value]
    if isinstance(values[0], dict):
        return {k: _join_state([v[k] for v in values]) for k in values[0]}
    return values[0]


def split_checkpoint(checkpoint: dict[str, Any], members: int) -> list[dict[str, Any]]:
    """A stack's checkpoint as one checkpoint per member: each a stack of one.

    Parameters and optimizer state carry the member dimension first (sliced), per-member
    optimizer hyperparameters are lists (sliced), the instruments' per-member state is
    sliced by ``MEMBER_STATE_KEYS``; the loops' progress is the same for every member.
    """
    parts = []
    for m in range(members):
        part = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        part["state_dict"] = {k: v[m : m + 1].clone() for k, v in checkpoint["state_dict"].items()}
        part["optimizer_states"] = [
            {
                "state": {
                    idx: {
                        k: v[m : m + 1].clone() if isinstance(v, Tensor) and v.dim() else v
                        for k, v in state.items()
                    }
                    for idx, state in opt["state"].items()
                },
                "param_groups": [
                    {k: v[m : m + 1] if k in MEMBER_HPARAMS else v for k, v in group.items()}
                    for group in opt["param_groups"]
                ],
            }
            for opt in checkpoint.get("optimizer_states", [])
        ]
        part["callbacks"] = {
            key: {k: _slice_state(v, m) if k in MEMBER_STATE_KEYS else v for k, v in state.items()}
            for key, state in checkpoint.get("callbacks", {}).items()
        }
        for key in MEMBER_LISTS:
            if key in checkpoint:
                part[key] = checkpoint[key][m : m + 1]
        parts.append(part)
    return parts


def merge_checkpoints(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The members' checkpoints (``split_checkpoint``'s, all at one step) as one stack's; a
    single member's as a stack of one, whose optimizer is torch's own (scalars, not lists)."""
    if len(parts) == 1:
        return _as_single(parts[0])
    first = parts[0]
    merged = {k: v for k, v in first.items() if k not in ("state_dict", "optimizer_states")}
    merged["state_dict"] = {
        k: torch.cat([p["state_dict"][k] for p in parts]) for k in first["state_dict"]
    }
    merged["optimizer_states"] = []
    for o, opt in enumerate(first.get("optimizer_states", [])):
        others = [p["optimizer_states"][o] for p in parts]
        merged["optimizer_states"].append(
            {
                "state": {
                    idx: {
                        k: torch.cat([x["state"][idx][k] for x in others])
                        if isinstance(v, Tensor) and v.dim()
                        else v
                        for k, v in state.items()
                    }
                    for idx, state in opt["state"].items()
                },
                "param_groups": [
                    {
                        k: [x for other in others for x in other["param_groups"][g][k]]
                        if k in MEMBER_HPARAMS
                        else v
                        for k, v in group.items()
                    }
                    for g, group in enumerate(opt["param_groups"])
                ],
            }
        )
    merged["callbacks"] = {
        key: {
            k: _join_state([p["callbacks"][key][k] for p in parts]) if k in MEMBER_STATE_KEYS else v
            for k, v in state.items()
        }
        for key, state in first.get("callbacks", {}).items()
    }
    for key in MEMBER_LISTS:
        if all(key in p for p in parts):
            merged[key] = [d for p in parts for d in p[key]]
    return merged


def is_member_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` is one member's part of a stack's (its optimizer's
    hyperparameters are per-member lists) rather than a single run's."""
    groups = [g for opt in checkpoint.get("optimizer_states", []) for g in opt["param_groups"]]
    return any(isinstance(g.get("lr"), list) for g in groups)


def _as_single(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A member's checkpoint with its optimizer's per-member lists as torch's scalars."""
    out = dict(checkpoint)
    out["optimizer_states"] = []
    for opt in checkpoint.get("optimizer_states", []):
        groups = []
        for group in opt["param_groups"]:
            group = {
                k: v[0] if k in MEMBER_HPARAMS and isinstance(v, list) else v
                for k, v in group.items()
            }
            if "decoupled" in group:  # StackedAdam's name for AdamW's decoupled weight decay
                group["decoupled_weight_decay"] = group.pop("decoupled")
            groups.append(group)
        out["optimizer_states"].append({**opt, "param_groups": groups})
    return out


class LastCheckpoint(ModelCheckpoint):
    """Keeps ``<dirpath>/last.ckpt`` for resuming: written at an epoch end when at least
    ``min_interval_s`` seconds passed since training started or since the last write, and
    always after the final epoch.

    Short epochs (digits: 23 steps) would otherwise spend ~5% of the run writing checkpoints;
    an interrupted job loses at most ``min_interval_s`` of work, and since training is
    deterministic it resumes to the same result.

    In a stack of several members (``member_dirs`` set by ``train_stack``) every member gets
    its own ``last.ckpt`` in its own job dir (``split_checkpoint``), so a re-run sweep can
    resume each member whatever stack it lands in.

    Args:
        dirpath: the checkpoint directory (the job's ``checkpoints/``).
        min_interval_s: the least time between two writes; 0 writes after every epoch.
    """

    def __init__(self, dirpath: str, min_interval_s: float = 10.0) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        # One file, overwritten (Lightning writes `save_last` only beside a top-k save).
        super().__init__(
            dirpath=dirpath,
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            every_n_epochs=1,
        )
        self.min_interval_s = min_interval_s
        self._written_at = -math.inf
        self.member_dirs: list[Path] = []

    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        # Lightning names the callback on every hook call (ModelCheckpoint builds the string
        # from five attributes each time); they are fixed at __init__, so build it once.
        return super().state_key

    @staticmethod
    def _final_epoch(trainer: L.Trainer) -> bool:
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        return (
            trainer.should_stop
            or 0 <= max_epochs <= trainer.current_epoch + 1
            or 0 <= trainer.max_steps <= trainer.global_step
        )

    def _should_skip_saving_checkpoint(self, trainer: L.Trainer) -> bool:
        if super()._should_skip_saving_checkpoint(trainer):
            return True
        recent = time.monotonic() - self._written_at < self.min_interval_s
        return recent and not self._final_epoch(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # The first write comes min_interval_s into training: a job shorter than that writes
        # one checkpoint, after its last epoch.
        self._written_at = time.monotonic()

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if len(self.member_dirs) > 1:
            self._save_members(trainer)
        else:
            super()._save_checkpoint(trainer, filepath)
        self._written_at = time.monotonic()

    def _save_members(self, trainer: L.Trainer) -> None:
        # Lightning writes one file per checkpoint; a stack needs one per member, so the
        # checkpoint dict (Lightning's own, as trainer.save_checkpoint builds it) is split.
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(self.save_weights_only)
        parts = split_checkpoint(checkpoint, len(self.member_dirs))
        for directory, part in zip(self.member_dirs, parts, strict=True):
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / ".last.ckpt.tmp"
            torch.save(part, tmp)
            os.replace(tmp, directory / "last.ckpt")  # atomic: a kill leaves the old one
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = str(self.member_dirs[0] / "last.ckpt")
