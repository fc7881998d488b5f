"""``train(cfg) -> result``: build data, model, trainer from the config and fit.

``main()`` is the thin ``@hydra.main`` wrapper behind ``python train.py``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelPruning
from omegaconf import DictConfig, ListConfig, OmegaConf

from fcn_research.callbacks.checkpoint import (
    EVENTS_RECORD,
    LastCheckpoint,
    UnsafeCheckpoint,
    is_member_checkpoint,
    keep_event_files,
    load_checkpoint,
    merge_checkpoints,
)
from fcn_research.callbacks.theory import TheoryPredictions

# CONF_DIR and the resolvers live in the light CLI module; importing it registers them.
from fcn_research.cli import CONF_DIR as CONF_DIR
from fcn_research.cli import job_dirname as job_dirname
from fcn_research.cli import unique_dir as unique_dir
from fcn_research.config_checks import ConfigError, check_config, exit_refused, refusal
from fcn_research.config_checks import job_hydra_node as _hydra_node
from fcn_research.data.base import InMemoryDataModule
from fcn_research.evaluation import BEST_VAL, best_val_checkpoint, evaluate_test
from fcn_research.job_lock import LOCK_FILE, JobDirBusy, job_dir_lock
from fcn_research.model import MLP, StackedMLP, hidden_widths
from fcn_research.module import FCNModule
from fcn_research.recording import ResultRecorder
from fcn_research.results import RESULT_FILE, read_result, write_json_atomic
from fcn_research.stacked_optim import stack_refusal
from fcn_research.stacking import solo_reason
from fcn_research.trainer_options import apply_trainer_options

log = logging.getLogger(__name__)
# The full final metrics, one line per job: conf/train.yaml sends it to train.log only.
metrics_log = logging.getLogger(f"{__name__}.metrics")

GROUPS = ("activation", "initializer", "data", "optimizer")
CHECKPOINT = Path("checkpoints") / "last.ckpt"
# Results as final as can be: a re-run (resume=true) skips them.
FINAL_STATUSES = ("completed", "diverged")


# Lightning warnings that don't apply: metrics are logged per epoch, not every n steps; and
# Lightning 2.6's own use of a torch API that torch 2.13 deprecates.
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def _choices(cfg: DictConfig | None = None) -> dict[str, str]:
    hydra_node = _hydra_node(cfg)
    if hydra_node is None:
        return {}
    return {k: str(v) for k, v in hydra_node.runtime.choices.items() if v is not None}


def _class_name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1]


def _flat_params(node: Any, prefix: str) -> dict[str, Any]:
    """A group's keys as ``prefix.key`` scalars; a nested ``_target_`` as its node's class name."""
    out: dict[str, Any] = {}
    if isinstance(node, DictConfig):
        if "_target_" in node and "." in prefix:  # e.g. initializer.base: the scheme it builds
            out[prefix] = _class_name(node["_target_"])
        for key in node:
            if str(key).startswith("_"):
                continue
            out.update(_flat_params(node[key], f"{prefix}.{key}"))
    elif isinstance(node, ListConfig):
        out[prefix] = str(list(node))
    elif node is None or isinstance(node, bool | int | float | str):
        out[prefix] = node
    return out


# Top-level knobs and the group key whose value the code uses: the group's own setting wins
# (``optimizer.lr=0.1`` trains with 0.1 whatever ``lr`` says).
_EFFECTIVE_KNOBS = {
    "lr": ("optimizer", "lr"),
    "batch_size": ("data", "batch_size"),
    "max_epochs": ("trainer", "max_epochs"),
}


def _effective(cfg: DictConfig, group: str, key: str) -> Any:
    """``cfg[group][key]``, or, where the group leaves it unset, its class's own default."""
    node = cfg.get(group)
    if node is None:
        return None
    if key in node:
        return node[key]
    parameter = inspect.signature(get_class(node["_target_"])).parameters.get(key)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def _overridden_targets(cfg: DictConfig) -> dict[str, str]:
    """Group roots whose ``_target_`` an override replaced: group -> the class now built."""
    out = {}
    for override in _overrides(cfg):
        key = override.split("=", 1)[0].lstrip("+~")
        group = key.removesuffix("._target_")
        if group in GROUPS and key != group and cfg.get(group) is not None:
            out[group] = _class_name(cfg[group].get("_target_"))
    return out


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyperparameters as used, as one flat dict of scalars (HParams, result.json).

    Groups by their option name (by class where an override replaced the ``_target_``),
    ``lr`` / ``batch_size`` / ``max_epochs`` as the optimizer, data and trainer get them,
    ``seed`` (init and batch order) and every group key, ``data.seed`` included.
    """
    choices = _choices(cfg)
    hparams: dict[str, Any] = {}
    for group in GROUPS:
        target = str(cfg[group].get("_target_", "")) if cfg.get(group) is not None else ""
        hparams[group] = choices.get(group, _class_name(target).lower() or "none")
    hparams.update(_overridden_targets(cfg))
    width = cfg.width
    hparams.update(
        depth=int(cfg.depth),
        width=width if isinstance(width, int) else str(list(width)),
        seed=int(cfg.seed),
    )
    for knob, (group, key) in _EFFECTIVE_KNOBS.items():
        hparams[knob] = _effective(cfg, group, key)
    used = {f"{group}.{key}" for group, key in _EFFECTIVE_KNOBS.values()}
    for group in GROUPS:
        if cfg.get(group) is None:
            continue
        for key, value in _flat_params(cfg[group], group).items():
            if key not in used:  # already there under the knob's own name
                hparams[key] = value
    return hparams


def _overrides(cfg: DictConfig | None = None) -> list[str]:
    hydra_node = _hydra_node(cfg)
    return list(hydra_node.overrides.task) if hydra_node is not None else []


def _width(cfg: DictConfig) -> Any:
    return OmegaConf.to_object(cfg.width) if isinstance(cfg.width, ListConfig) else cfg.width


def build_data(cfg: DictConfig, seeds: list[int] | None = None) -> InMemoryDataModule:
    """The datamodule of ``cfg`` (shared by every member of a stack), set up, its training
    order seeded by each member's ``seed`` (``seeds``; default the run's own)."""
    hidden_widths(_width(cfg), cfg.depth)  # a bad depth or width fails before any data is read
    datamodule: InMemoryDataModule = instantiate(cfg.data)
    # The run's seed orders the mini-batches; data.seed alone fixes the dataset and its split.
    datamodule.shuffle_seeds = tuple(seeds if seeds is not None else [int(cfg.seed)])
    datamodule.setup("fit")
    steps_per_batch = int(cfg.get("steps_per_batch", 1))
    if steps_per_batch < 1:
        raise ValueError(
            "steps_per_batch (mini-batches per Lightning batch) must be >= 1, "
            f"got {steps_per_batch}"
        )
    datamodule.steps_per_batch = steps_per_batch
    return datamodule


def build_network(cfg: DictConfig, datamodule: InMemoryDataModule) -> MLP:
    """One member's MLP, initialised from its own ``seed`` exactly as its solo job is."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net = MLP(
        datamodule.num_features,
        datamodule.num_outputs,
        depth=cfg.depth,
        width=_width(cfg),
        activation=instantiate(cfg.activation),
    )
    instantiate(cfg.initializer)(net)
    return net


def build(cfg: DictConfig) -> tuple[InMemoryDataModule, FCNModule]:
    """Instantiate and validate data and model (with its initializer) without training:
    one network, a stack of one."""
    datamodule = build_data(cfg)
    net = build_network(cfg, datamodule)
    module = FCNModule(
        StackedMLP([net]),
        datamodule.task,
        datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
    )
    return datamodule, module


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    if node is None:
        return []
    return [instantiate(v) for v in node.values() if v is not None and "_target_" in v]


def _trained_to_the_end(state: dict[str, Any], max_epochs: int | None) -> bool:
    """Whether the checkpoint was saved after the last epoch (Lightning's ``epoch`` is 0-based)."""
    if max_epochs is None or max_epochs < 0:
        return False
    return int(state.get("epoch", -1)) + 1 >= max_epochs


def _resume_state(out: Path, resume: Any, max_epochs: int | None) -> dict[str, Any] | None:
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


def job_env() -> dict[str, Any]:
    """Where the job runs: host, the GPUs Ray or SLURM made visible to it, torch's threads."""
    return {
        "host": socket.gethostname(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_threads": torch.get_num_threads(),
    }


# Set by Lightning's spawn launcher in the launching process (MASTER_PORT: a port that was
# free when the job started). Left there, the next ddp_spawn job of a sweep would reuse it.
SPAWN_ENV = ("MASTER_ADDR", "MASTER_PORT")


@contextmanager
def restored_env(names: tuple[str, ...] = SPAWN_ENV) -> Iterator[None]:
    """Put the environment variables ``names`` back as they were (unset if they were)."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _take_recorded(result: dict[str, Any], out: Path) -> None:
    """Take into ``result`` what the training process (under ddp_spawn: its rank-0 worker)
    wrote into result.json through ``ResultRecorder``."""
    recorded = read_result(out) or {}
    for key in ("init", "metrics", "epochs", "global_step", "theory"):
        if key in recorded:
            result[key] = recorded[key]
    # JSON keeps a non-finite metric as null; in memory it is NaN again.
    result["metrics"] = {k: math.nan if v is None else v for k, v in result["metrics"].items()}


def _pruned_after_validation(trainer: L.Trainer) -> bool:
    """Whether a ModelPruning callback changed the weights after the fit's last validation."""
    return any(
        isinstance(callback, ModelPruning) and callback.amount != 0
        for callback in trainer.callbacks
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one MLP as configured (a stack of one); write and return its result (schema:
    DESIGN.md).

    Raises ``JobDirBusy`` when another process trains in the same job dir (its files are
    left alone); any other failure is recorded in result.json as ``failed``, then raised.
    """
    with job_dir_lock(cfg.output_dir):
        return _train_members([cfg], None, raise_errors=True)[0]


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
        groups = _resume_groups([cfgs[i] for i in held], held)
        if len(held) > 1:
            reason = _unstackable([cfgs[i] for i in held])
            if reason:
                log.warning("the members train one by one, as stacks of one: %s", reason)
                groups = [[i] for group in groups for i in group]
        for group in groups:
            members = [cfgs[i] for i in group]
            info = {**(stack or {}), "members": len(members)} if stack is not None else None
            for i, result in zip(
                group, _train_members(members, info, raise_errors=False), strict=True
            ):
                results[i] = result
    return [r if r is not None else {"status": "failed"} for r in results]


def _unstackable(cfgs: Sequence[DictConfig]) -> str | None:
    """Why these jobs cannot train as one stack (None: they can): what only building their
    optimizers shows, and the launcher's ``solo_reason`` for the first (the members share its
    shape: its trainer, callbacks and activation, which that probes)."""
    try:
        refused = stack_refusal([instantiate(cfg.optimizer) for cfg in cfgs])
    except Exception as err:  # a bad config: each member records its own error
        return f"{type(err).__name__}: {err}"
    if refused:
        return refused
    if cfgs[0].get("test_weights", "last") == BEST_VAL:
        return "test_weights=best_val keeps one best epoch, chosen by one validation metric"
    return solo_reason(cfgs[0])


def _resume_step(cfg: DictConfig) -> int | None:
    """The optimizer step a job resumes from (None: it starts afresh)."""
    max_epochs = cfg.get("trainer", {}).get("max_epochs")
    try:
        state = _resume_state(Path(cfg.output_dir), cfg.get("resume", True), max_epochs)
    except UnsafeCheckpoint:
        return None  # refused, with its message, when the member starts
    return None if state is None else int(state.get("global_step", 0))


def _resume_groups(cfgs: list[DictConfig], indices: list[int]) -> list[list[int]]:
    """``indices`` grouped by the step their jobs resume from: members of one stack move in
    lockstep, so only jobs at the same step (or all fresh) train together."""
    groups: dict[int | None, list[int]] = {}
    for cfg, i in zip(cfgs, indices, strict=True):
        groups.setdefault(_resume_step(cfg), []).append(i)
    return list(groups.values())


def _fail(result: dict[str, Any], out: Path, err: Exception, started: bool) -> None:
    """Record ``err`` in a member's result (what it measured before failing stays)."""
    if started:
        _take_recorded(result, out)
    result["status"] = "failed"
    result["error"] = refusal(err) or f"{type(err).__name__}: {err}"


def _train_members(
    cfgs: Sequence[DictConfig], stack: dict[str, Any] | None, raise_errors: bool
) -> list[dict[str, Any]]:
    """Train ``cfgs`` as one stack; each member's result.json is written whatever happens.

    With ``raise_errors`` (a single run) a failure is raised after it is recorded.
    """
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    live: list[int] = []  # indices of the members that still train
    started: set[int] = set()
    for i, cfg in enumerate(cfgs):
        out = Path(cfg.output_dir)
        previous = read_result(out)
        # `is True`: an invalid resume value is refused below, not taken as a yes.
        if (
            cfg.get("resume", True) is True
            and previous
            and previous.get("status") in FINAL_STATUSES
        ):
            log.info("%s already %s; skipping (resume=false to retrain)", out, previous["status"])
            results.append(previous)
            continue
        result: dict[str, Any] = {
            "status": "running",
            "overrides": _overrides(cfg),
            "hparams": {},
            "metrics": {},
            # A resumed job keeps the step-0 values it measured before it was interrupted.
            "init": (previous or {}).get("init", {}),
            "epochs": 0,
            "wall_s": 0.0,
            "env": job_env(),
        }
        if stack is not None:
            result["stack"] = stack
        results.append(result)
        try:
            check_config(cfg)
            # Before any logger writes: the job's TensorBoard run keeps what its checkpoint saw.
            max_epochs = cfg.get("trainer", {}).get("max_epochs")
            state = _resume_state(out, cfg.get("resume", True), max_epochs)
            keep_event_files(out, out / CHECKPOINT.parent / EVENTS_RECORD, state)
            result["hparams"] = flat_hparams(cfg)
            write_json_atomic(out / RESULT_FILE, result)
            started.add(i)  # from here on, result.json is this run's
            live.append(i)
        except Exception as err:
            _fail(result, out, err, False)
            _finish(result, out, start)
            if raise_errors:
                raise
    if not live:
        return results
    first = cfgs[live[0]]
    try:
        if first.get("num_threads"):
            torch.set_num_threads(int(first.num_threads))
        try:
            datamodule = build_data(first, [int(cfgs[i].seed) for i in live])
        except ValueError as err:  # data settings that only building shows bad
            raise ConfigError(str(err)) from err
        nets = []
        for i in list(live):
            try:
                nets.append(build_network(cfgs[i], datamodule))
            except Exception as err:
                failure = ConfigError(str(err)) if isinstance(err, ValueError) else err
                _fail(results[i], Path(cfgs[i].output_dir), failure, True)
                _finish(results[i], Path(cfgs[i].output_dir), start)
                live.remove(i)
                if raise_errors:
                    raise failure from err
        if not live:
            return results
        if len(live) != len(datamodule.shuffle_seeds):  # a member failed to build
            datamodule.shuffle_seeds = tuple(int(cfgs[i].seed) for i in live)
            datamodule._loaders.clear()
        _fit(cfgs, results, live, datamodule, nets, stack)
    except Exception as err:
        for i in live:
            _fail(results[i], Path(cfgs[i].output_dir), err, i in started)
        if raise_errors:
            raise
        log.exception("stack failed")
    finally:
        end = time.perf_counter()  # one stack time for every member
        for i in live:
            _finish(results[i], Path(cfgs[i].output_dir), start, members=len(live), end=end)
    for i in live:
        rounded = {k: round(v, 4) for k, v in results[i]["metrics"].items()}
        line = f"{results[i]['status']}: {rounded}"
        metrics_log.info("%s", line)
        if stack is not None:
            # A member's own train.log: the stack's log (in .stacks/) holds the details.
            _append_log(Path(cfgs[i].output_dir), f"stack {stack.get('id')}: {line}")
    return results


def _append_log(out: Path, line: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(out / "train.log", "a") as f:
        f.write(f"[{stamp}][{__name__}.metrics][INFO] - {line}\n")


def _finish(
    result: dict[str, Any], out: Path, start: float, members: int = 1, end: float | None = None
) -> None:
    """Write a member's final result.json, with its wall time: ``wall_s``, its share of the
    time from ``start`` to ``end`` (now), split evenly among the ``members`` that trained
    together, and for a member of a stack (several members, or a stacked sweep's)
    ``stack_wall_s``, the whole."""
    elapsed = (end if end is not None else time.perf_counter()) - start
    result["wall_s"] = round(elapsed / members, 3)
    if members > 1 or "stack" in result:
        result["stack_wall_s"] = round(elapsed, 3)
    write_json_atomic(out / RESULT_FILE, result)


def _fit(
    cfgs: Sequence[DictConfig],
    results: list[dict[str, Any]],
    live: list[int],
    datamodule: InMemoryDataModule,
    nets: list[MLP],
    stack: dict[str, Any] | None,
) -> None:
    """Fit the stack of ``nets`` (members ``live``) and take each member's outcome."""
    first = cfgs[live[0]]
    outs = [Path(cfgs[i].output_dir) for i in live]
    module = FCNModule(
        StackedMLP(nets),
        datamodule.task,
        datamodule.num_classes,
        optimizer=[instantiate(cfgs[i].optimizer) for i in live],
    )
    module.run_hparams = [results[i]["hparams"] for i in live]  # what HParamsSummary shows
    module.run_overrides = [results[i]["overrides"] for i in live]
    if len(live) == 1:
        # Lightning's own record of them: the logger's hparams.yaml and the checkpoint.
        module.save_hyperparameters(results[live[0]]["hparams"])
    for i in live:
        # The task and class count (the report's chance level) without importing data code.
        results[i].update(task=datamodule.task, num_classes=datamodule.num_classes)
    # The recorder last: it writes what the instruments before it measured.
    callbacks = [
        *_instantiate_all(first.get("callbacks")),
        *best_val_checkpoint(first, module),
        ResultRecorder(outs),
    ]
    if len(live) > 1:
        refused = [type(c).__name__ for c in callbacks if isinstance(c, ModelPruning)]
        if refused:
            raise ConfigError(f"{refused} prune by a ranking over the whole stack: not stacked")
        for callback in callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.member_dirs = [out / CHECKPOINT.parent for out in outs]
            if isinstance(callback, TheoryPredictions):
                callback.members = [
                    (instantiate(cfgs[i].initializer), out)
                    for i, out in zip(live, outs, strict=True)
                ]
    # One logger set per member, in member order (a member's loggers write its own run).
    loggers = []
    for i in live:
        own = _instantiate_all(cfgs[i].get("logger"))
        if len(live) > 1:
            for logger in own:  # each member's hparams.yaml (a stack of one: Lightning's)
                logger.log_hyperparams(results[i]["hparams"])
        loggers += own
    trainer: L.Trainer = instantiate(first.trainer, callbacks=callbacks, logger=loggers or False)
    apply_trainer_options(trainer, module, datamodule)  # before fit: it picks the batching
    ckpt_path, merged = _resume_checkpoint(outs, first, trainer.max_epochs)
    try:
        with restored_env():  # each job of a sweep finds its own free port
            # weights_only: Lightning loads only what load_checkpoint accepted.
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        if merged:
            Path(ckpt_path).unlink(missing_ok=True)
    for i, out in zip(live, outs, strict=True):
        _take_recorded(results[i], out)
    if _pruned_after_validation(trainer) and "val/loss" in results[live[0]]["metrics"]:
        # The final metrics describe the final network: Lightning validates before an
        # epoch's on_train_epoch_end, where ModelPruning prunes, so the fit's last val/*
        # belong to a less pruned network. Validate it once more, as a Lightning user
        # would with trainer.validate after fit, logged at the final step (Lightning's
        # logging counter, as the module keeps it, moved one past it at the epoch's end;
        # under ddp_spawn this process's trainer never counted: the recorded step).
        trainer.fit_loop.epoch_loop._batches_that_stepped = results[live[0]]["global_step"]
        trainer.validate(module, datamodule=datamodule, verbose=False)
        _take_recorded(results[live[0]], outs[0])
    if evaluate_test(trainer, module, datamodule, first, results[live[0]]["global_step"]):
        for i, out in zip(live, outs, strict=True):
            _take_recorded(results[i], out)
    for m, i in enumerate(live):
        diverged = module.diverged[m] or results[i]["metrics"].get("train/diverged", 0.0) > 0
        results[i]["status"] = "diverged" if diverged else "completed"


def _resume_checkpoint(
    outs: list[Path], cfg: DictConfig, max_epochs: int | None
) -> tuple[str | None, bool]:
    """The checkpoint to resume from (None: a fresh start) and whether it is a merged stack
    checkpoint written for this fit (removed after it)."""
    ckpts = [out / CHECKPOINT for out in outs]
    states = [_resume_state(out, cfg.get("resume", True), max_epochs) for out in outs]
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


# What a job's last terminal line shows; result.json and train.log hold every metric.
KEY_METRICS = ("val/acc", "val/mse", "neurons/dead_fraction", "grad_norm/ratio_first_last")
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def summary(result: dict[str, Any]) -> str:
    """A job's outcome in one line: status, key final metrics, epochs and wall time."""
    metrics = result.get("metrics", {})
    shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in KEY_METRICS if metrics.get(k) is not None)
    return (
        f"{result.get('status')}: {shown or 'no metrics'}  "
        f"(epochs {result.get('epochs', 0)}, {result.get('wall_s', 0):.1f} s)"
    )


def quiet_lightning(verbose: Any) -> None:
    """Lightning's info lines (devices found, a product tip, why fit stopped) only at
    ``hydra.verbose=true`` or ``hydra.verbose=lightning``; its warnings always.

    Lightning sets its loggers to INFO when imported, after Hydra has applied
    ``hydra.verbose``, so the level is set here, once Lightning is loaded.
    """
    if logging.getLogger().handlers:
        # Lightning's import gives the `lightning` logger a console handler of its own; Hydra's
        # job logging on the root already prints its records (and writes them to train.log).
        own = logging.getLogger("lightning")
        own.handlers = [h for h in own.handlers if type(h) is not logging.StreamHandler]
    names = [verbose] if isinstance(verbose, str) else list(verbose or [])
    for logger in LIGHTNING_LOGGERS:
        named = verbose is True or any(logger == n or logger.startswith(f"{n}.") for n in names)
        logging.getLogger(logger).setLevel(logging.DEBUG if named else logging.WARNING)


def _remove_refused_run(run_dir: Path) -> None:
    """Remove a single run's dir that holds only what Hydra and a refused start wrote there."""
    left = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if left <= {".hydra", "train.log", RESULT_FILE, LOCK_FILE}:
        shutil.rmtree(run_dir, ignore_errors=True)


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory where it lies below it: shorter to read."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def run_job(cfg: DictConfig) -> float | None:
    """One job of ``python train.py`` (``fcn_research.cli.main``): train, return the metric.

    A refused config (or a job dir in use) is one line, not a traceback (``HYDRA_FULL_ERROR=1``
    shows it); a single run's refused config leaves no run dir behind, and its dir is shown
    only once the config is accepted.
    """
    hydra_cfg = HydraConfig.get()
    quiet_lightning(hydra_cfg.verbose)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    fresh = not (Path(cfg.output_dir) / RESULT_FILE).exists()
    out = _shown_path(cfg.output_dir)
    if multirun:  # Hydra's launcher has just logged the job's overrides
        log.info("job dir %s", out)
    try:
        if not multirun:
            check_config(cfg)  # train checks again; a dir shown is one that stays
            log.info("%s -> run dir %s", " ".join(hydra_cfg.overrides.task) or "defaults", out)
        result = train(cfg)
    except Exception as err:
        message = str(err) if isinstance(err, JobDirBusy) else refusal(err)
        if multirun:
            # One failed job must not end the sweep; result.json says `failed` and why.
            if message is None:
                log.exception("job failed; the sweep goes on")
            else:
                log.error("job failed: %s; the sweep goes on", message)
            return None
        if message is None:
            raise
        if fresh and not isinstance(err, JobDirBusy):  # an earlier run's or the holder's: kept
            _remove_refused_run(Path(cfg.output_dir))
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        exit_refused(message)
    log.info("%s", summary(result))
    metrics = result.get("metrics", {})
    value = metrics.get("val/acc", metrics.get("val/mse"))
    return float(value) if value is not None else None
