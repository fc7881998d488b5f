"""Which jobs of a sweep may train together as one stacked model, and the stack job itself.

A *stack* is a group of a sweep's jobs (its *members*) that run the same sequence of
operations and so train as one model with a leading member dimension. Members may differ
only in what changes the numbers, not the operations (``stack_spec.MEMBER_KEYS``: the seed,
the initializer, the learning rate and the optimizer's numeric hyperparameters). (Not the data
seed: a stack holds one copy of one dataset, which its members walk in their own orders.)
``stack_key`` says which jobs may share a stack, ``solo_reason`` why a job must run as a
stack of one (its activation is probed once, with torch imported then), ``group_stacks``
groups a sweep's jobs. The launcher
(``hydra_plugins.fcn_stacked_launcher``) writes each stack's manifest
(``<sweep dir>/.stacks/stack_NNN/manifest.yaml``) and runs ``fcn_research.job.run_stack`` on
it as one job.

This module imports neither torch nor Lightning: Hydra loads it with the launcher plugin
whenever ``python train.py`` starts, ``--help`` included.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.conf import HydraConf
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from fcn_research.stack_spec import MEMBER_KEYS, STACKED_OPTIMIZERS

STACKS_DIR = ".stacks"  # under the sweep dir: one folder per stack, no run in it
MANIFEST_FILE = "manifest.yaml"

# Where and how a job runs; the launcher knobs are the sweep's override_dirname.exclude_keys.
RUN_KEYS = ("output_dir", "resume", "num_threads")
# Excluded from job names, yet one stack trains on one device: members must agree on it.
SHARED_RUN_KEYS = ("trainer.accelerator",)
# The project's own instruments (conf/callbacks/default.yaml): they compute on stacked tensors.
OWN_CALLBACKS = "fcn_research.callbacks."
# Lightning's EarlyStopping: each member of a stack stops on its own
# (``fcn_research.callbacks.early_stopping.MemberEarlyStopping``).
EARLY_STOPPING = (
    "lightning.pytorch.callbacks.EarlyStopping",
    "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
)
SINGLE_DEVICE_STRATEGIES = ("auto", "single_device")
# Precisions that scale the loss with a GradScaler: one for a whole stack would skip every
# member's step, and lower every member's scale, for an inf in one member's gradient.
GRAD_SCALER_PRECISIONS = ("16-mixed", "16")
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_OUTPUT_DIR = "<output_dir>"  # the job dir, the same for every member when comparing keys


def _pop(tree: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def _exclude_keys(cfg: DictConfig) -> list[str]:
    keys = OmegaConf.select(cfg, "hydra.job.config.override_dirname.exclude_keys", default=None)
    return [str(k) for k in keys or []]


def stack_key(cfg: DictConfig) -> str:
    """What a job's members must share: its resolved config without ``MEMBER_KEYS``, the
    hydra node and the keys that say where and how it runs. Equal keys may share a stack."""
    node = copy.deepcopy(cfg)
    with read_write(node), open_dict(node):
        node.pop("hydra", None)
        # Others interpolate it (checkpoint dir, default_root_dir); its value is per job.
        node.output_dir = _OUTPUT_DIR
    tree = OmegaConf.to_container(node, resolve=True)
    assert isinstance(tree, dict)
    run_keys = {*RUN_KEYS, *_exclude_keys(cfg)} - set(SHARED_RUN_KEYS)
    for key in (*MEMBER_KEYS, *run_keys):
        _pop(tree, key)
    return json.dumps(tree, sort_keys=True, default=str)


def _device_count(devices: Any) -> int | None:
    """How many devices a Trainer's ``devices`` asks for; None for every one (-1, "auto")."""
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text.lstrip("-").isdigit():
        return None if int(text) == -1 else int(text)
    return None


def solo_reason(cfg: DictConfig) -> str | None:
    """Why the job must run as a stack of one (None: it may share a stack)."""
    optimizer = OmegaConf.select(cfg, "optimizer._target_", default=None)
    if optimizer not in STACKED_OPTIMIZERS:
        return (
            f"optimizer {optimizer} has no stacked implementation ({', '.join(STACKED_OPTIMIZERS)})"
        )
    trainer = cfg.get("trainer") or {}
    clip = trainer.get("gradient_clip_val")
    if clip:
        return f"trainer.gradient_clip_val={clip} clips by the norm of the whole stacked tensor"
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, DictConfig):  # a strategy object: only Lightning's single device
        strategy = str(strategy.get("_target_", strategy))
        single = strategy.endswith(".SingleDeviceStrategy")
    else:
        single = strategy is None or strategy in SINGLE_DEVICE_STRATEGIES
    if not single:
        return f"trainer.strategy={strategy} runs on several devices or processes"
    devices = trainer.get("devices", "auto")
    count = _device_count(devices)
    if count is None or count > 1:
        return f"trainer.devices={devices} is not one device"
    nodes = trainer.get("num_nodes", 1)
    if nodes not in (None, 1):
        return f"trainer.num_nodes={nodes} is not one device"
    precision = str(trainer.get("precision"))
    if precision in GRAD_SCALER_PRECISIONS:
        return (
            f"trainer.precision={precision} scales the loss with one GradScaler for the whole "
            "stack (an inf in one member would skip every member's step)"
        )
    if cfg.get("test_weights") == "best_val":  # fcn_research.evaluation.BEST_VAL
        return "test_weights=best_val keeps one best epoch, chosen by one validation metric"
    for name, callback in (cfg.get("callbacks") or {}).items():
        if not isinstance(callback, DictConfig) or "_target_" not in callback:
            continue  # switched off (null), so not built
        target = str(callback._target_)
        if target in EARLY_STOPPING:
            reason = _early_stopping_reason(trainer)
            if reason:
                return f"callbacks.{name} ({target}) with {reason}"
        elif not target.startswith(OWN_CALLBACKS):
            return (
                f"callbacks.{name} ({target}) acts on the whole model; only the instruments of "
                f"{OWN_CALLBACKS}* act per member"
            )
    return activation_reason(cfg)


def _early_stopping_reason(trainer: Any) -> str | None:
    """Why early stopping cannot stop each member of a stack on its own (None: it can): a
    member stops only at an epoch's end, where validation ends and the solo run may stop."""
    interval = trainer.get("val_check_interval")
    if interval not in (None, 1.0):
        return f"trainer.val_check_interval={interval} (a member stops only at an epoch's end)"
    for key in ("min_epochs", "min_steps"):
        if trainer.get(key) not in (None, 0, -1):
            return f"trainer.{key}={trainer.get(key)} (a stop signal must be final)"
    return None


def activation_reason(cfg: DictConfig) -> str | None:
    """Why the job's activation cannot serve several members at once (None: it can), from
    probing it (``fcn_research.model.activation_stack_refusal``): once per activation config
    and width in a process."""
    activation = OmegaConf.to_container(cfg.activation, resolve=True)
    width = OmegaConf.to_container(cfg.width) if isinstance(cfg.width, ListConfig) else cfg.width
    return _probed_activation(json.dumps([activation, width, cfg.depth], default=str))


@functools.cache
def _probed_activation(key: str) -> str | None:
    from hydra.utils import instantiate

    from fcn_research.model import (
        activation_stack_refusal,
        checked_activation,
        hidden_widths,
        pool_size,
    )

    node, width, depth = json.loads(key)
    try:
        widths = hidden_widths(width, depth)
        if not widths:  # a perceptron has no activation
            return None
        activation = checked_activation(instantiate(node)())
        return activation_stack_refusal(activation, widths[0] * pool_size(activation))
    except Exception as err:  # a bad activation fails in its own job, recorded there
        return f"its activation could not be probed ({type(err).__name__}: {err})"


def group_stacks(cfgs: Sequence[DictConfig], max_members: int) -> list[list[int]]:
    """The jobs' indices grouped into stacks, in job order: equal ``stack_key``, at most
    ``max_members`` each; a job with a ``solo_reason`` is a stack of its own."""
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ValueError(
            f"max_members must be an integer >= 1 (jobs per stack), got {max_members!r}"
        )
    stacks: list[list[int]] = []
    filling: dict[str, list[int]] = {}
    for index, cfg in enumerate(cfgs):
        try:
            key = None if solo_reason(cfg) else stack_key(cfg)
        except Exception:  # a config that does not even resolve fails in its own job, recorded
            key = None
        if key is None:
            stacks.append([index])
            continue
        stack = filling.get(key)
        if stack is None or len(stack) >= max_members:
            stack = filling[key] = []
            stacks.append(stack)
        stack.append(index)
    return stacks


def member_node(cfg: DictConfig) -> dict[str, Any]:
    """A member's config, hydra node included, as plain data with every value resolved."""
    tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(tree, dict)
    return tree


def write_manifest(path: Path, stack: dict[str, Any], members: Sequence[DictConfig]) -> None:
    """Write the stack's manifest: its info and each member's resolved config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {"stack": stack, "members": [member_node(m) for m in members]}
    # PyYAML's C dumper and loader: OmegaConf's own take ~10x as long for 64 members.
    path.write_text(yaml.dump(manifest, Dumper=_YAML_DUMPER, sort_keys=False), encoding="utf-8")


def read_manifest(path: str | Path) -> tuple[dict[str, Any], list[DictConfig]]:
    """The stack's info and its members' full configs, the hydra node typed as Hydra's (as
    ``HydraConfig.set_config`` wants it)."""
    manifest = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # a run dir runs no code
    typed = OmegaConf.structured(HydraConf)
    OmegaConf.set_struct(typed, False)  # a composed hydra node has more (hydra.env, callbacks)
    members = []
    for node in manifest["members"]:
        cfg = OmegaConf.create({k: v for k, v in node.items() if k != "hydra"})
        with open_dict(cfg):
            cfg.hydra = OmegaConf.merge(typed, node["hydra"])
        members.append(cfg)
    return manifest["stack"], members
