"""The fit of a stack: its members' jobs trained as one model, each ending with its result.json.

``fit_stack`` reads as the story of a fit: open each member (skip the final ones, check the
config, write ``running``), build the shared data and one network per member, then
``_fit``: module, callbacks, loggers, trainer; fit (from a checkpoint where one resumes);
test; each member's status. Whatever fails, each member's result.json says so.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelPruning
from omegaconf import DictConfig, ListConfig, OmegaConf

from fcn_research.callbacks.checkpoint import LastCheckpoint
from fcn_research.callbacks.early_stopping import MemberEarlyStopping
from fcn_research.callbacks.theory import TheoryPredictions
from fcn_research.config_checks import ConfigError, check_config, refusal
from fcn_research.data.base import InMemoryDataModule
from fcn_research.evaluation import best_val_checkpoint, evaluate_test
from fcn_research.hparams import flat_hparams, job_overrides
from fcn_research.model import MLP, StackedMLP
from fcn_research.module import FCNModule
from fcn_research.private_internals import set_logging_step
from fcn_research.recording import ResultRecorder
from fcn_research.results import RESULT_FILE, read_result, write_json_atomic
from fcn_research.resume import CHECKPOINT, already_final, checkpoint_to_resume, keep_resumed_events
from fcn_research.trainer_options import apply_trainer_options

log = logging.getLogger(__name__)
# The full final metrics, one line per job: conf/train.yaml sends this logger to train.log only.
METRICS_LOGGER = "fcn_research.train.metrics"
metrics_log = logging.getLogger(METRICS_LOGGER)
# Set by Lightning's spawn launcher in the launching process (MASTER_PORT: a port that was
# free when the job started). Left there, the next ddp_spawn job of a sweep would reuse it.
SPAWN_ENV = ("MASTER_ADDR", "MASTER_PORT")

# Lightning warnings that don't apply: metrics are logged per epoch, not every n steps; and
# Lightning 2.6's own use of a torch API that torch 2.13 deprecates.
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def job_env() -> dict[str, Any]:
    """Where the job runs: host, the GPUs Ray or SLURM made visible to it, torch's threads."""
    return {
        "host": socket.gethostname(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_threads": torch.get_num_threads(),
    }


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


@dataclass
class Member:
    """One job of a stack: its config, its job dir and its result (what its result.json says)."""

    cfg: DictConfig
    out: Path
    result: dict[str, Any] = field(default_factory=dict)

    def take_recorded(self) -> None:
        """Take into ``result`` what the training process (under ddp_spawn: its rank-0 worker)
        wrote into result.json through ``ResultRecorder``."""
        recorded = read_result(self.out) or {}
        for key in ("init", "metrics", "epochs", "global_step", "theory"):
            if key in recorded:
                self.result[key] = recorded[key]
        # JSON keeps a non-finite metric as null; in memory it is NaN again.
        self.result["metrics"] = {
            k: math.nan if v is None else v for k, v in self.result["metrics"].items()
        }

    def fail(self, err: Exception, recorded: bool = True) -> None:
        """Record ``err`` (what the member measured before failing stays, where ``recorded``)."""
        if recorded:
            self.take_recorded()
        self.result["status"] = "failed"
        self.result["error"] = refusal(err) or f"{type(err).__name__}: {err}"

    def finish(self, start: float, members: int = 1, end: float | None = None) -> None:
        """Write the final result.json, with its wall time: ``wall_s``, its share of the time
        from ``start`` to ``end`` (now), split evenly among the ``members`` that trained
        together, and for a member of a stack (several members, or a stacked sweep's)
        ``stack_wall_s``, the whole."""
        elapsed = (end if end is not None else time.perf_counter()) - start
        self.result["wall_s"] = round(elapsed / members, 3)
        if members > 1 or "stack" in self.result:
            self.result["stack_wall_s"] = round(elapsed, 3)
        write_json_atomic(self.out / RESULT_FILE, self.result)


def _new_result(
    cfg: DictConfig, previous: dict[str, Any] | None, stack: dict[str, Any] | None
) -> dict[str, Any]:
    """A job's result.json as it starts: ``running``, nothing measured yet."""
    result: dict[str, Any] = {
        "status": "running",
        "overrides": job_overrides(cfg),
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
    return result


def _start(member: Member, start: float, raise_errors: bool) -> bool:
    """Check the member's config and write its ``running`` result.json: from here on it is
    this run's. False: the config was refused (recorded ``failed``)."""
    try:
        check_config(member.cfg)
        keep_resumed_events(member.cfg, member.out)
        member.result["hparams"] = flat_hparams(member.cfg)
        write_json_atomic(member.out / RESULT_FILE, member.result)
        return True
    except Exception as err:
        member.fail(err, recorded=False)
        member.finish(start)
        if raise_errors:
            raise
        return False


def fit_stack(
    cfgs: Sequence[DictConfig], stack: dict[str, Any] | None, raise_errors: bool
) -> list[dict[str, Any]]:
    """Train ``cfgs`` as one stack; return their results, each written to its result.json
    whatever happens. A member whose result is final already is skipped.

    With ``raise_errors`` (a single run) a failure is raised after it is recorded.
    """
    start = time.perf_counter()
    members, live = [], []
    for cfg in cfgs:
        member = Member(cfg, Path(cfg.output_dir))
        previous = read_result(member.out)
        if already_final(cfg, previous):
            log.info(
                "%s already %s; skipping (resume=false to retrain)", member.out, previous["status"]
            )
            member.result = previous
        else:
            member.result = _new_result(cfg, previous, stack)
            if _start(member, start, raise_errors):
                live.append(member)
        members.append(member)
    if live:
        _train(live, stack, start, raise_errors)
    return [member.result for member in members]


def _train(
    live: list[Member], stack: dict[str, Any] | None, start: float, raise_errors: bool
) -> None:
    """Build and fit the stack of the ``live`` members; record each member's outcome."""
    try:
        if live[0].cfg.get("num_threads"):
            torch.set_num_threads(int(live[0].cfg.num_threads))
        datamodule = _shared_data(live)
        nets = _networks(live, datamodule, start, raise_errors)
        if not live:
            return
        if len(live) != len(datamodule.shuffle_seeds):  # a member failed to build
            datamodule.shuffle_seeds = tuple(int(member.cfg.seed) for member in live)
            datamodule._loaders.clear()
        _fit(live, datamodule, nets)
    except Exception as err:
        for member in live:
            member.fail(err)
        if raise_errors:
            raise
        log.exception("stack failed")
    finally:
        end = time.perf_counter()  # one stack time for every member
        for member in live:
            member.finish(start, members=len(live), end=end)
    for member in live:
        _log_outcome(member, stack)


def _log_outcome(member: Member, stack: dict[str, Any] | None) -> None:
    rounded = {k: round(v, 4) for k, v in member.result["metrics"].items()}
    line = f"{member.result['status']}: {rounded}"
    metrics_log.info("%s", line)
    if stack is not None:
        # A member's own train.log: the stack's log (in .stacks/) holds the details.
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(member.out / "train.log", "a") as f:
            f.write(f"[{stamp}][{METRICS_LOGGER}][INFO] - stack {stack.get('id')}: {line}\n")


def _width(cfg: DictConfig) -> Any:
    return OmegaConf.to_object(cfg.width) if isinstance(cfg.width, ListConfig) else cfg.width


def build_data(cfg: DictConfig, seeds: list[int] | None = None) -> InMemoryDataModule:
    """The datamodule of ``cfg`` (shared by every member of a stack), set up, its training
    order seeded by each member's ``seed`` (``seeds``; default the run's own)."""
    datamodule: InMemoryDataModule = instantiate(cfg.data)
    # The run's seed orders the mini-batches; data.seed alone fixes the dataset and its split.
    datamodule.shuffle_seeds = tuple(seeds if seeds is not None else [int(cfg.seed)])
    datamodule.setup("fit")
    datamodule.steps_per_batch = int(cfg.get("steps_per_batch", 1))
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


def _shared_data(live: list[Member]) -> InMemoryDataModule:
    """The stack's one datamodule, each member walking it in its own seed's order."""
    try:
        return build_data(live[0].cfg, [int(member.cfg.seed) for member in live])
    except ValueError as err:  # data settings that only building shows bad
        raise ConfigError(str(err)) from err


def _networks(
    live: list[Member], datamodule: InMemoryDataModule, start: float, raise_errors: bool
) -> list[MLP]:
    """One network per member of ``live``; a member whose network fails to build is recorded
    ``failed`` and leaves ``live`` (the others train)."""
    nets = []
    for member in list(live):
        try:
            nets.append(build_network(member.cfg, datamodule))
        except Exception as err:
            failure = ConfigError(str(err)) if isinstance(err, ValueError) else err
            member.fail(failure)
            member.finish(start)
            live.remove(member)
            if raise_errors:
                raise failure from err
    return nets


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    if node is None:
        return []
    return [instantiate(v) for v in node.values() if v is not None and "_target_" in v]


def _module(live: list[Member], datamodule: InMemoryDataModule, nets: list[MLP]) -> FCNModule:
    """The LightningModule of the stack, with each member's optimizer and hparams."""
    module = FCNModule(
        StackedMLP(nets),
        datamodule.task,
        datamodule.num_classes,
        optimizer=[instantiate(member.cfg.optimizer) for member in live],
    )
    module.run_hparams = [member.result["hparams"] for member in live]  # what HParamsSummary shows
    module.run_overrides = [member.result["overrides"] for member in live]
    if len(live) == 1:
        # Lightning's own record of them: the logger's hparams.yaml and the checkpoint.
        module.save_hyperparameters(live[0].result["hparams"])
    return module


def _callbacks(live: list[Member], module: FCNModule) -> list[L.Callback]:
    """The first member's callbacks (members share them), told about every member."""
    # The recorder last: it writes what the instruments before it measured.
    callbacks = [
        *_instantiate_all(live[0].cfg.get("callbacks")),
        *best_val_checkpoint(live[0].cfg, module),
        ResultRecorder([member.out for member in live]),
    ]
    if len(live) > 1:
        refused = [type(c).__name__ for c in callbacks if isinstance(c, ModelPruning)]
        if refused:
            raise ConfigError(f"{refused} prune by a ranking over the whole stack: not stacked")
        # Lightning's EarlyStopping stops the whole run: each member stops by its rule alone.
        callbacks = [
            MemberEarlyStopping(c, len(live)) if type(c) is EarlyStopping else c for c in callbacks
        ]
        for callback in callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.set_member_dirs([member.out / CHECKPOINT.parent for member in live])
            if isinstance(callback, TheoryPredictions):
                callback.set_members(
                    [(instantiate(member.cfg.initializer), member.out) for member in live]
                )
    return callbacks


def _loggers(live: list[Member]) -> list[Any]:
    """One logger set per member, in member order (a member's loggers write its own run)."""
    loggers = []
    for member in live:
        own = _instantiate_all(member.cfg.get("logger"))
        if len(live) > 1:
            for logger in own:  # each member's hparams.yaml (a stack of one: Lightning's)
                logger.log_hyperparams(member.result["hparams"])
        loggers += own
    return loggers


def _pruned_after_validation(trainer: L.Trainer) -> bool:
    """Whether a ModelPruning callback changed the weights after the fit's last validation."""
    return any(
        isinstance(callback, ModelPruning) and callback.amount != 0
        for callback in trainer.callbacks
    )


def _fit(live: list[Member], datamodule: InMemoryDataModule, nets: list[MLP]) -> None:
    """Fit the stack of ``nets`` (one per member of ``live``) and take each member's outcome."""
    first = live[0]
    module = _module(live, datamodule, nets)
    # The task and class count (the report's chance level) without importing data code.
    for member in live:
        member.result.update(task=datamodule.task, num_classes=datamodule.num_classes)
    callbacks = _callbacks(live, module)
    loggers = _loggers(live)
    trainer: L.Trainer = instantiate(
        first.cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    apply_trainer_options(trainer, module, datamodule)  # before fit: it picks the batching
    outs = [member.out for member in live]
    with (
        checkpoint_to_resume(outs, first.cfg, trainer.max_epochs) as ckpt_path,
        restored_env(),  # each job of a sweep finds its own free port
    ):
        # weights_only: Lightning loads only what load_checkpoint accepted.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    for member in live:
        member.take_recorded()
    if _pruned_after_validation(trainer) and "val/loss" in first.result["metrics"]:
        # The final metrics describe the final network: Lightning validates before an
        # epoch's on_train_epoch_end, where ModelPruning prunes, so the fit's last val/*
        # belong to a less pruned network. Validate it once more, as a Lightning user
        # would with trainer.validate after fit, logged at the final step (Lightning's
        # logging counter, as the module keeps it, moved one past it at the epoch's end;
        # under ddp_spawn this process's trainer never counted: the recorded step).
        set_logging_step(trainer, first.result["global_step"])
        trainer.validate(module, datamodule=datamodule, verbose=False)
        first.take_recorded()
    if evaluate_test(trainer, module, datamodule, first.cfg, first.result["global_step"]):
        for member in live:
            member.take_recorded()
    for m, member in enumerate(live):
        diverged = module.diverged[m] or member.result["metrics"].get("train/diverged", 0.0) > 0
        member.result["status"] = "diverged" if diverged else "completed"
