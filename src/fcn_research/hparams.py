"""A run's hyperparameters as used, flat (``flat_hparams``): result.json's ``hparams``, the
HParams dashboard and the logger's hparams.yaml."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig

from fcn_research.config_checks import job_hydra_node

GROUPS = ("activation", "initializer", "data", "optimizer")
# Top-level knobs and the group key whose value the code uses: the group's own setting wins
# (``optimizer.lr=0.1`` trains with 0.1 whatever ``lr`` says).
_EFFECTIVE_KNOBS = {
    "lr": ("optimizer", "lr"),
    "batch_size": ("data", "batch_size"),
    "max_epochs": ("trainer", "max_epochs"),
}


def job_overrides(cfg: DictConfig | None = None) -> list[str]:
    """The job's command-line overrides (result.json's ``overrides``); [] outside Hydra."""
    hydra_node = job_hydra_node(cfg)
    return list(hydra_node.overrides.task) if hydra_node is not None else []


def _choices(cfg: DictConfig | None = None) -> dict[str, str]:
    hydra_node = job_hydra_node(cfg)
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
    for override in job_overrides(cfg):
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
