"""``train(cfg) -> result``: one MLP trained as configured; ``train_stack``: several jobs as one
stacked model; ``build(cfg)``: data and model without training.

The Hydra job around them (``python train.py``) is ``fcn_research.job.run_job``; the fit
itself is ``fcn_research.fit``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from fcn_research.data.base import InMemoryDataModule
from fcn_research.fit import build_data, build_network, fit_stack
from fcn_research.job_lock import JobDirBusy, job_dir_lock
from fcn_research.model import StackedMLP
from fcn_research.module import FCNModule
from fcn_research.resume import resume_groups
from fcn_research.stacked_optim import stack_refusal
from fcn_research.stacking import solo_reason

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one MLP as configured (a stack of one); write and return its result.json.

    Raises ``JobDirBusy`` when another process trains in the same job dir (its files are
    left alone); any other failure is recorded in result.json as ``failed``, then raised.
    """
    with job_dir_lock(cfg.output_dir):
        return fit_stack([cfg], None, raise_errors=True)[0]


def train_stack(cfgs: Sequence[DictConfig], stack: dict[str, Any] | None = None) -> list[dict]:
    """Train the jobs ``cfgs`` together as one stack (``StackedMLP``); return their results.

    Each config is one job's, with its own ``output_dir`` (and, from the stacked launcher,
    its job's ``hydra`` node). Every member ends with the result.json its solo job would
    write, plus ``stack`` (``stack``: which stack, how many members). A member that fails
    to build is recorded ``failed`` and the others train; one whose job dir another process
    holds is left alone. Completed members are skipped; members resumed from checkpoints of
    different steps train as separate stacks, one per step.
    """
    results: list[dict[str, Any] | None] = [None] * len(cfgs)
    with ExitStack() as locks:
        held = []
        for i, cfg in enumerate(cfgs):
            try:
                locks.enter_context(job_dir_lock(cfg.output_dir))
                held.append(i)
            except JobDirBusy as err:
                log.error("%s", err)
                results[i] = {"status": "running", "error": str(err)}
        for group in _stacks([cfgs[i] for i in held], held):
            members = [cfgs[i] for i in group]
            info = {**(stack or {}), "members": len(members)} if stack is not None else None
            for i, result in zip(group, fit_stack(members, info, raise_errors=False), strict=True):
                results[i] = result
    return [r if r is not None else {"status": "failed"} for r in results]


def _stacks(cfgs: list[DictConfig], indices: list[int]) -> list[list[int]]:
    """``indices`` (of the jobs ``cfgs``) as the stacks that train: by resume step, or each
    alone where the jobs cannot share a stack."""
    groups = resume_groups(cfgs, indices)
    if len(indices) > 1:
        reason = _unstackable(cfgs)
        if reason:
            log.warning("the members train one by one, as stacks of one: %s", reason)
            groups = [[i] for group in groups for i in group]
    return groups


def _unstackable(cfgs: Sequence[DictConfig]) -> str | None:
    """Why these jobs cannot train as one stack (None: they can): what only building their
    optimizers shows, and the launcher's ``solo_reason`` for the first (the members share its
    shape: its trainer, callbacks, test weights and activation, which that probes)."""
    try:
        refused = stack_refusal([instantiate(cfg.optimizer) for cfg in cfgs])
    except Exception as err:  # a bad config: each member records its own error
        return f"{type(err).__name__}: {err}"
    if refused:
        return refused
    return solo_reason(cfgs[0])


def build(cfg: DictConfig) -> tuple[InMemoryDataModule, FCNModule]:
    """Instantiate data and model (with its initializer) without training: one network, a
    stack of one."""
    datamodule = build_data(cfg)
    net = build_network(cfg, datamodule)
    module = FCNModule(
        StackedMLP([net]),
        datamodule.task,
        datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
    )
    return datamodule, module
