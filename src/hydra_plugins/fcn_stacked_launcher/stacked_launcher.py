"""``StackedLauncher``: the jobs of a sweep that share a shape train together, one stack per job.

For each batch of jobs a sweeper hands it, the launcher composes every job's config and job
dir exactly as Hydra's basic launcher does (and writes its ``.hydra/``), groups the jobs into
stacks (``fcn_research.stacking.group_stacks``), writes each stack's manifest under
``<sweep dir>/.stacks/stack_NNN/`` and runs every stack as one job of the launcher preset named
by ``stack_on`` (``conf/launcher/<stack_on>.yaml``, used as it is). It returns one
``JobReturn`` per job, in order, as the basic launcher would, so sweepers work on top of it.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import copy
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fcn_research.config_checks import exit_refused
from fcn_research.stacking import (
    MANIFEST_FILE,
    STACKS_DIR,
    group_stacks,
    solo_reason,
    write_manifest,
)

log = logging.getLogger(__name__)

# The launcher's own knobs (conf/launcher/stacked.yaml): not passed on to the stack_on preset.
OWN_KNOBS = ("launcher", "max_members", "stack_on")
VAL_METRICS = ("val/acc", "val/mse")  # a job's return value, as fcn_research.job.run_job's


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.fcn_stacked_launcher.stacked_launcher.StackedLauncher"
    # Any, not int: the launcher refuses a bad value in one line, not OmegaConf in a traceback.
    max_members: Any = 64  # members per stack at most (memory)
    stack_on: str = "local"  # the launcher preset that runs the stacks (conf/launcher/)


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="fcn_research"
)


def _override_value(value: Any) -> str:
    """``value`` as the right-hand side of a Hydra override."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


def _save_yaml(node: Any, path: Path) -> None:
    """Write ``node`` unresolved, as Hydra's ``run_job`` writes a job's ``.hydra/`` files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(node), encoding="utf-8")


def _val_metric(result: dict[str, Any]) -> float | None:
    metrics = result.get("metrics") or {}
    value = next((metrics[k] for k in VAL_METRICS if metrics.get(k) is not None), None)
    return float(value) if value is not None else None


@dataclass
class _Member:
    """One job of the sweep: its full config and what Hydra's ``run_job`` would return."""

    cfg: DictConfig
    ret: JobReturn


# Config groups that set hydra.* nodes (hparams_search picks the sweeper whose settings a
# sweep's hydra.sweeper.* overrides set): the stack's own config is composed with them too.
HYDRA_GROUPS = ("hparams_search",)


class StackedLauncher(Launcher):
    """Runs a sweep's jobs as stacks of members, each stack one job of ``stack_on``."""

    def __init__(self, max_members: int = 64, stack_on: str = "local") -> None:
        self.max_members = max_members
        self.stack_on = stack_on
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.stacks_launched = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # The task function is train.py's run_job; stacks run fcn_research.job.run_stack.
        self.config = config
        self.hydra_context = hydra_context
        message = self._refusal()
        if message is not None:  # before the sweeper claims the sweep dir: nothing is left
            exit_refused(message)

    def _refusal(self) -> str | None:
        """What is wrong with ``stack_on`` or ``max_members``, or None."""
        assert self.hydra_context is not None
        presets = sorted(
            set(self.hydra_context.config_loader.get_group_options("launcher")) - {"stacked"}
        )
        if self.stack_on not in presets:
            return (
                f"stack_on must be one of {', '.join(presets)} (a launcher preset in "
                f"conf/launcher/, where the stacks run), got {self.stack_on!r}"
            )
        try:
            group_stacks([], self.max_members)  # it checks max_members
        except ValueError as err:
            return str(err)
        return None

    def compose_member(self, overrides: list[str], idx: int, stack_config: DictConfig) -> _Member:
        """Job ``idx``'s config and dir as the basic launcher and ``run_job`` make them, with its
        ``.hydra/`` written; the Trainer settings that the ``stack_on`` preset adds for where it
        runs (``stack_config``, e.g. slurm's SLURMEnvironment) where the job sets none."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
            preset_trainer = OmegaConf.to_container(stack_config.trainer)  # unresolved
            assert isinstance(preset_trainer, dict)
            for key, value in preset_trainer.items():
                if key not in cfg.trainer and key not in self.config.trainer:  # the preset's own
                    cfg.trainer[key] = value
        HydraConfig.instance().set_config(cfg)
        sweep_dir = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
        subdir = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        output_dir = os.path.abspath(os.path.join(sweep_dir, subdir))
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(cfg)
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if cfg.hydra.output_subdir is not None:
            hydra_output = Path(output_dir) / str(cfg.hydra.output_subdir)
            _save_yaml(task_cfg, hydra_output / "config.yaml")
            _save_yaml(hydra_cfg, hydra_output / "hydra.yaml")
            _save_yaml(cfg.hydra.overrides.task, hydra_output / "overrides.yaml")
        # Concrete values for the manifest, which is resolved: there the run dir's resolver
        # would claim a new dir, and output_dir must not depend on whose HydraConfig is set.
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.sweep.dir = sweep_dir
            cfg.hydra.sweep.subdir = subdir
            cfg.hydra.run.dir = output_dir
        with read_write(cfg), open_dict(cfg):
            cfg.output_dir = output_dir
        ret = JobReturn(
            overrides=list(cfg.hydra.overrides.task),
            cfg=task_cfg,
            hydra_cfg=hydra_cfg,
            working_dir=os.getcwd(),
            task_name=str(cfg.hydra.job.name),
        )
        return _Member(cfg, ret)

    def stack_overrides(self) -> list[str]:
        """``launcher=<stack_on>`` and the preset knobs this sweep sets (``cpus_per_job=2`` ...):
        the overrides of every stack job and of the config its launcher is built from."""
        assert self.config is not None
        excluded = {str(k) for k in self.config.hydra.job.config.override_dirname.exclude_keys}
        overrides = [f"launcher={self.stack_on}"]
        for line in self.config.hydra.overrides.task:
            key = str(line).split("=", 1)[0].lstrip("+~")
            if key in HYDRA_GROUPS:  # a group that the sweep's hydra.* overrides refer to
                overrides.append(str(line))
            elif key in excluded and key not in OWN_KNOBS and "." not in key and key in self.config:
                overrides.append(f"++{key}={_override_value(self.config[key])}")
        return overrides

    def stack_config(self) -> DictConfig:
        """The config of the ``stack_on`` preset's launcher, with this sweep's preset knobs."""
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(
            self.config, self.stack_overrides()
        )

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run the jobs as stacks; one ``JobReturn`` per job, in order."""
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        stacks_dir = sweep_dir / STACKS_DIR
        if self.stacks_launched == 0 and stacks_dir.is_dir():  # a re-run keeps earlier stacks
            self.stacks_launched = len(list(stacks_dir.glob("stack_*")))
        stack_config = self.stack_config()
        master_hydra = HydraConfig.instance().cfg
        try:
            members = [
                self.compose_member(list(overrides), initial_job_idx + i, stack_config)
                for i, overrides in enumerate(job_overrides)
            ]
        finally:
            HydraConfig.instance().cfg = master_hydra
        stacks = group_stacks([m.cfg for m in members], self.max_members)
        log.info("Launching %d jobs as %d stacks (on %s)", len(members), len(stacks), self.stack_on)
        shared = self.stack_overrides()
        stack_jobs = []
        for n, indices in enumerate(stacks, start=self.stacks_launched):
            stack_id = f"stack_{n:03d}"
            info = {"id": stack_id, "members": len(indices)}
            manifest = stacks_dir / stack_id / MANIFEST_FILE
            write_manifest(manifest, info, [members[i].cfg for i in indices])
            names = [str(members[i].cfg.hydra.sweep.subdir) for i in indices]
            reason = solo_reason(members[indices[0]].cfg) if len(indices) == 1 else None
            log.info(
                "\t%s: %d member%s: %s%s",
                stack_id,
                len(indices),
                "" if len(indices) == 1 else "s",
                " ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}",
                f" (alone: {reason})" if reason else "",
            )
            stack_jobs.append(
                [
                    *shared,
                    f"+stack_manifest={_override_value(str(manifest.resolve()))}",
                    f"hydra.sweep.subdir={_override_value(f'{STACKS_DIR}/{stack_id}')}",
                ]
            )
        first = self.stacks_launched
        self.stacks_launched += len(stacks)
        # Imported here: it imports the training code, and Hydra loads this plugin at --help.
        from fcn_research.job import run_stack

        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=run_stack, config=stack_config
        )
        stack_returns = launcher.launch(stack_jobs, initial_job_idx=first)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for indices, stack_ret in zip(stacks, stack_returns, strict=True):
            self._return_members([members[i].ret for i in indices], stack_ret)
        return [m.ret for m in members]

    @staticmethod
    def _return_members(rets: list[JobReturn], stack_ret: JobReturn) -> None:
        """Each member's return as the basic launcher gives it: its val metric (None if it
        failed: ``run_job`` records that, and returns), FAILED only if the stack job raised."""
        try:
            results = stack_ret.return_value
        except Exception as err:  # the stack's process failed: so did each of its members
            for ret in rets:
                ret.status = JobStatus.FAILED
                ret.return_value = err
            return
        for ret, result in zip(rets, results, strict=True):
            ret.status = JobStatus.COMPLETED
            ret.return_value = _val_metric(result)
