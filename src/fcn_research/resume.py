"""Resuming: which of its jobs a re-run skips, which checkpoint a job resumes from, which jobs
resume together as one stack, and a stack's members' checkpoints joined for its fit."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fcn_research.callbacks.checkpoint import (
    EVENTS_RECORD,
    UnsafeCheckpoint,
    is_member_checkpoint,
    keep_event_files,
    load_checkpoint,
    merge_checkpoints,
)

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.ckpt"
# Results as final as can be: a re-run (resume=true) skips them.
FINAL_STATUSES = ("completed", "diverged")


def already_final(cfg: DictConfig, previous: dict[str, Any] | None) -> bool:
    """Whether the job's earlier result (``previous``) is final, so a re-run skips it."""
    # `is True`: an invalid resume value is refused when the job starts, not taken as a yes.
    return (
        cfg.get("resume", True) is True
        and bool(previous)
        and previous.get("status") in FINAL_STATUSES
    )


def _max_epochs(cfg: DictConfig) -> int | None:
    return cfg.get("trainer", {}).get("max_epochs")


def _trained_to_the_end(state: dict[str, Any], max_epochs: int | None) -> bool:
    """Whether the checkpoint was saved after the last epoch (Lightning's ``epoch`` is 0-based)."""
    if max_epochs is None or max_epochs < 0:
        return False
    return int(state.get("epoch", -1)) + 1 >= max_epochs


def resume_state(out: Path, resume: Any, max_epochs: int | None) -> dict[str, Any] | None:
    """The checkpoint a job resumes from, loaded safely (``load_checkpoint``: an unsafe one
    is refused, an unreadable one set aside); None: the job trains from step 0.

    One from the last epoch is not resumed: the job was killed after it but before its
    result.json, so the final metrics died with the process, and resuming would train
    nothing. Training is deterministic, so a fresh start gives the same result.
    """
    ckpt = out / CHECKPOINT
    if not resume or not ckpt.exists():
        return None
    state = load_checkpoint(ckpt)
    if state is None or _trained_to_the_end(state, max_epochs):
        return None
    return state


def keep_resumed_events(cfg: DictConfig, out: Path) -> None:
    """Trim the job's TensorBoard run to what its checkpoint saw (all of it on a fresh start):
    called before any logger writes."""
    state = resume_state(out, cfg.get("resume", True), _max_epochs(cfg))
    keep_event_files(out, out / CHECKPOINT.parent / EVENTS_RECORD, state)


def _resume_step(cfg: DictConfig) -> int | None:
    """The optimizer step a job resumes from (None: it starts afresh)."""
    try:
        state = resume_state(Path(cfg.output_dir), cfg.get("resume", True), _max_epochs(cfg))
    except UnsafeCheckpoint:
        return None  # refused, with its message, when the member starts
    return None if state is None else int(state.get("global_step", 0))


def resume_groups(cfgs: Sequence[DictConfig], indices: list[int]) -> list[list[int]]:
    """``indices`` grouped by the step their jobs resume from: members of one stack move in
    lockstep, so only jobs at the same step (or all fresh) train together."""
    groups: dict[int | None, list[int]] = {}
    for cfg, i in zip(cfgs, indices, strict=True):
        groups.setdefault(_resume_step(cfg), []).append(i)
    return list(groups.values())


def _resume_checkpoint(
    outs: list[Path], cfg: DictConfig, max_epochs: int | None
) -> tuple[str | None, bool]:
    """The checkpoint to resume from (None: a fresh start) and whether it is a merged stack
    checkpoint written for this fit (removed after it)."""
    ckpts = [out / CHECKPOINT for out in outs]
    states = [resume_state(out, cfg.get("resume", True), max_epochs) for out in outs]
    if any(state is None for state in states):
        if cfg.get("resume", True) and ckpts[0].exists():
            log.info("%s is from the last epoch; retraining to recover the metrics", ckpts[0])
        return None, False
    if len(ckpts) == 1 and not is_member_checkpoint(states[0]):
        log.info("resuming from %s", ckpts[0])
        return str(ckpts[0]), False
    # Each member keeps its own checkpoint; the stack resumes from them joined.
    merged = outs[0] / CHECKPOINT.parent / ".stack_resume.ckpt"
    torch.save(merge_checkpoints(states), merged)
    log.info("resuming %d members from their checkpoints", len(ckpts))
    return str(merged), True


@contextmanager
def checkpoint_to_resume(
    outs: list[Path], cfg: DictConfig, max_epochs: int | None
) -> Iterator[str | None]:
    """The ``ckpt_path`` for a fit of the members in ``outs`` (None: from step 0); a merged
    stack checkpoint is removed once the fit ends."""
    ckpt_path, merged = _resume_checkpoint(outs, cfg, max_epochs)
    try:
        yield ckpt_path
    finally:
        if merged:
            Path(str(ckpt_path)).unlink(missing_ok=True)
