"""The resume checkpoint: one ``last.ckpt``, rewritten at epoch ends, at most every few
seconds; read back only through ``load_checkpoint`` (nothing in it can run code)."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from fcn_research.callbacks.probe import member_writers
from fcn_research.config_checks import ConfigError
from fcn_research.private_internals import ModelCheckpointHooks, checkpoint_dict
from fcn_research.results import atomic_path, write_json_atomic
from fcn_research.stack_spec import (
    CALLBACK_MEMBER_SCALARS,
    CALLBACK_MEMBER_STATE,
    CHECKPOINT_MEMBER_LISTS,
    OPTIMIZER_MEMBER_LISTS,
)

log = logging.getLogger(__name__)

# Beside a job's last.ckpt: its TensorBoard event files as they stood when the epochs that
# checkpoint holds had logged everything (name -> bytes), so a resumed job drops the rest.
EVENTS_RECORD = "events.json"


class UnsafeCheckpoint(ConfigError):
    """A checkpoint whose pickle asks for more than tensors and plain values: loading it
    could run code, so it is refused."""


def load_checkpoint(path: Path, mmap: bool = True) -> dict[str, Any] | None:
    """The checkpoint at ``path``, loaded with ``weights_only`` (tensors and plain values:
    nothing in it can run code); ``mmap`` reads tensors only when used.

    A file that is not a readable checkpoint (cut short by a full disk or an interrupted
    copy) is set aside as ``<name>.unreadable`` and None is returned: training is
    deterministic, so the job trains from the start to the result it would have had.
    Raises ``UnsafeCheckpoint`` for a file whose pickle asks for anything else.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"would call {found.group(1)}" if found else "holds more than tensors and values"
        raise UnsafeCheckpoint(
            f"checkpoint {path} refused: loading it {what}, and a checkpoint holds only "
            "tensors and plain values (it may run code); delete it to train the job from "
            "the start, or re-run with resume=false"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        state = None
    else:
        reason = "not a dict"
    if isinstance(state, dict):
        return state
    aside = path.with_name(f"{path.name}.unreadable")
    os.replace(path, aside)
    log.warning(
        "%s is not a readable checkpoint (%s); set aside as %s, the job trains from the start",
        path,
        reason[:200],
        aside.name,
    )
    return None


def _slice_state(value: Any, m: int) -> Any:
    """Member ``m``'s part of a per-member callback state value."""
    if isinstance(value, list):
        return value[m : m + 1]
    if isinstance(value, dict):
        return {k: _slice_state(v, m) for k, v in value.items()}
    return value


def _member_state(key: str, value: Any, m: int) -> Any:
    """Member ``m``'s part of one entry of a stack's callback state."""
    if key in CALLBACK_MEMBER_STATE:
        return _slice_state(value, m)
    if key in CALLBACK_MEMBER_SCALARS and isinstance(value, list):
        return value[m]
    return value


def _joined_state(key: str, values: list[Any]) -> Any:
    """One entry of the members' callback states as the stack's."""
    if key in CALLBACK_MEMBER_STATE:
        return _join_state(values)
    if key in CALLBACK_MEMBER_SCALARS:
        return list(values)
    return values[0]


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
    sliced by ``CALLBACK_MEMBER_STATE``; the loops' progress is the same for every member.
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
                    {
                        k: v[m : m + 1] if k in OPTIMIZER_MEMBER_LISTS else v
                        for k, v in group.items()
                    }
                    for group in opt["param_groups"]
                ],
            }
            for opt in checkpoint.get("optimizer_states", [])
        ]
        part["callbacks"] = {
            key: {k: _member_state(k, v, m) for k, v in state.items()}
            for key, state in checkpoint.get("callbacks", {}).items()
        }
        for key in CHECKPOINT_MEMBER_LISTS:
            if key in checkpoint:
                part[key] = checkpoint[key][m : m + 1]
        parts.append(part)
    return parts


def merge_checkpoints(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The members' checkpoints (all at one step: a stack's members', ``split_checkpoint``'s,
    or single runs', in any mix) as one stack's; a single member's as a stack of one, whose
    optimizer is torch's own (scalars, not lists)."""
    if len(parts) == 1:
        return _as_single(parts[0])
    parts = [p if is_member_checkpoint(p) else _as_member(p) for p in parts]
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
                        k: _join_member_state([x["state"][idx][k] for x in others]) for k in state
                    }
                    for idx, state in opt["state"].items()
                },
                "param_groups": [
                    {
                        k: [x for other in others for x in other["param_groups"][g][k]]
                        if k in OPTIMIZER_MEMBER_LISTS
                        else v
                        for k, v in group.items()
                    }
                    for g, group in enumerate(opt["param_groups"])
                ],
            }
        )
    merged["callbacks"] = {
        key: {k: _joined_state(k, [p["callbacks"][key][k] for p in parts]) for k in state}
        for key, state in first.get("callbacks", {}).items()
    }
    for key in CHECKPOINT_MEMBER_LISTS:
        if all(key in p for p in parts):
            merged[key] = [d for p in parts for d in p[key]]
    return merged


def _join_member_state(values: list[Any]) -> Any:
    """One optimizer state entry of every member, joined on the member axis; a single run
    of SGD without momentum keeps no buffer (None), which for a stack is zeros: with
    momentum 0 the buffer is the gradient, whatever it held before."""
    like = next((v for v in values if isinstance(v, Tensor) and v.dim()), None)
    if like is None:
        return values[0]  # the same for every member (Adam's step count)
    return torch.cat([torch.zeros_like(like) if v is None else v for v in values])


def _as_member(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A single run's checkpoint (a stack of one with torch's optimizer) as a stack member's:
    the optimizer's hyperparameters as per-member lists (``_as_single`` undone)."""
    out = dict(checkpoint)
    out["optimizer_states"] = []
    for opt in checkpoint.get("optimizer_states", []):
        groups = []
        for group in opt["param_groups"]:
            group = {k: [v] if k in OPTIMIZER_MEMBER_LISTS else v for k, v in group.items()}
            if "decoupled_weight_decay" in group:  # AdamW in torch; StackedAdam's `decoupled`
                group["decoupled"] = group.pop("decoupled_weight_decay")
            groups.append(group)
        out["optimizer_states"].append({**opt, "param_groups": groups})
    return out


def record_event_files(record: Path, writer: Any, step: int) -> None:
    """Write ``record``: the TensorBoard event files of ``writer``'s run, flushed, by size."""
    writer.flush()
    log_dir = Path(writer.log_dir)
    files = {p.name: p.stat().st_size for p in log_dir.iterdir() if "tfevents" in p.name}
    write_json_atomic(record, {"global_step": step, "event_files": files})


def _read_record(record: Path) -> tuple[Any, dict[str, int]] | None:
    """A record's step and event file sizes; None if there is none or it is unreadable."""
    try:
        content = json.loads(record.read_text())
        step, files = content["global_step"], content["event_files"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(files, dict) or not all(isinstance(v, int) for v in files.values()):
        return None
    return step, files


def keep_event_files(run_dir: Path, record: Path, state: dict[str, Any] | None) -> None:
    """Cut the TensorBoard event files of ``run_dir`` back to what the checkpoint the job
    resumes from (``state``; None: it starts from step 0) had logged by the end of its
    epochs, as ``record`` holds it: the job logs the rest again, each step once.

    Files written later are removed, those the record knew are cut to their recorded size
    (a record boundary: the writer was flushed). Without a record of that step, nothing
    was logged after the checkpoint's epochs ended, and the files stay as they are.
    """
    files = [p for p in run_dir.iterdir() if "tfevents" in p.name] if run_dir.is_dir() else []
    if state is None:
        kept: dict[str, int] = {}
        record.unlink(missing_ok=True)
    else:
        recorded = _read_record(record)
        if recorded is None or recorded[0] != state.get("global_step"):
            return
        kept = recorded[1]
    for path in files:
        size = kept.get(path.name)
        if size is None:
            path.unlink()
        elif path.stat().st_size > size:
            os.truncate(path, size)


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
                k: v[0] if k in OPTIMIZER_MEMBER_LISTS and isinstance(v, list) else v
                for k, v in group.items()
            }
            if "decoupled" in group:  # StackedAdam's name for AdamW's decoupled weight decay
                group["decoupled_weight_decay"] = group.pop("decoupled")
            groups.append(group)
        out["optimizer_states"].append({**opt, "param_groups": groups})
    return out


class LastCheckpoint(ModelCheckpointHooks):
    """Keeps ``<dirpath>/last.ckpt`` for resuming: written at an epoch end when at least
    ``min_interval_s`` seconds passed since training started or since the last write, and
    always after the final epoch.

    Short epochs (digits: 23 steps) would otherwise spend much of the run writing checkpoints;
    an interrupted job loses at most ``min_interval_s`` of work, and since training is
    deterministic it resumes to the same result.

    In a stack of several members (``set_member_dirs``) every member gets its own
    ``last.ckpt`` in its own job dir (``split_checkpoint``), so a re-run sweep can resume each
    member whatever stack it lands in.

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
        self._events_due = False

    def set_member_dirs(self, dirs: Sequence[Path]) -> None:
        """Write one checkpoint per member of a stack, member m's into ``dirs[m]`` (its job's
        ``checkpoints/``); called by the fit before training, in member order."""
        self.member_dirs = list(dirs)

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

    def skips_save(self, trainer: L.Trainer) -> bool:
        recent = time.monotonic() - self._written_at < self.min_interval_s
        return recent and not self._final_epoch(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # The first write comes min_interval_s into training: a job shorter than that writes
        # one checkpoint, after its last epoch.
        self._written_at = time.monotonic()

    def write_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if len(self.member_dirs) > 1:
            self._save_members(trainer)
        else:
            super().write_checkpoint(trainer, filepath)
        self._written_at = time.monotonic()
        self._events_due = True
        for writer in member_writers(trainer):  # what the checkpoint's epochs logged so far
            if writer is not None:
                writer.flush()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epochs in the checkpoint have logged everything by now (Lightning writes a
        # single run's train/* after the checkpoint), and the next step has logged nothing:
        # what each member's run holds at this point is what a resumed job keeps.
        if not self._events_due:
            return
        self._events_due = False
        dirs = self.member_dirs if len(self.member_dirs) > 1 else [Path(str(self.dirpath))]
        writers = member_writers(trainer)
        if len(writers) == len(dirs):
            for directory, writer in zip(dirs, writers, strict=True):
                if writer is not None:
                    record_event_files(directory / EVENTS_RECORD, writer, trainer.global_step)

    def _save_members(self, trainer: L.Trainer) -> None:
        # Lightning writes one file per checkpoint; a stack needs one per member, so the
        # checkpoint dict (Lightning's own, as trainer.save_checkpoint builds it) is split.
        checkpoint = checkpoint_dict(trainer, self.save_weights_only)
        parts = split_checkpoint(checkpoint, len(self.member_dirs))
        for directory, part in zip(self.member_dirs, parts, strict=True):
            directory.mkdir(parents=True, exist_ok=True)
            with atomic_path(directory / "last.ckpt") as tmp:  # a kill leaves the old one
                torch.save(part, tmp)
        self.record_saved(trainer, str(self.member_dirs[0] / "last.ckpt"))
