"""Refuse a bad config before anything trains, in one line: the key, the value, what is allowed.

``check_config`` checks the top-level knobs and the values the code actually uses
(``optimizer.lr``, ``data.batch_size``, ``trainer.max_epochs`` interpolate the knobs unless a
user overrides them), and builds the activation and the optimizer once: both are partials,
called only later (the optimizer inside ``trainer.fit``). The other groups' constructors check
their own arguments; Hydra wraps what they raise in an ``InstantiationException`` that names
the config key, and ``refusal`` turns it into the same one line.

``check_overrides`` refuses a ``+key=value`` that the run would not use (Hydra adds any key
it is asked to), and ``check_group_values`` the values of the groups' keys that their
classes' annotations rule out (``fix_bias=maybe``, a NaN ``beta``), since these would
otherwise be read wrongly or fail only in training.

``SeparateJobDirs`` refuses a sweep, before any job starts, whose jobs would share a job dir.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import math
import os
import re
import sys
import types
import typing
from typing import Any, Literal, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from fcn_research.run_dirs import CONF_DIR

MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces
# Hydra's own keys in a node that builds an object.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})
# Top-level nodes holding any number of named objects, each a node with a _target_.
OBJECT_DICTS = ("callbacks", "logger")
# Groups whose values are checked against the annotations of the classes they build.
VALUE_GROUPS = ("activation", "initializer", "data", "optimizer")
# Bytes per parameter in training: the weight, its gradient and Adam's two moments, float32.
TRAINING_BYTES_PER_PARAMETER = 4 * 4
CFG_JOB = "python train.py --cfg job lists the run's keys"


class ConfigError(ValueError):
    """A config value that training cannot use; the message is one line for the user."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def _check_lr(key: str, lr: Any) -> None:
    _require(_is_number(lr) and lr >= 0, key, "a finite number >= 0 (the learning rate)", lr)


def _check_batch_size(key: str, batch_size: Any) -> None:
    _require(_is_int(batch_size) and batch_size >= 1, key, "an integer >= 1", batch_size)


def _check_seed(key: str, seed: Any) -> None:
    _require(_is_int(seed) and 0 <= seed <= MAX_SEED, key, f"an integer in [0, {MAX_SEED}]", seed)


def _check_max_epochs(key: str, max_epochs: Any, allow_none: bool) -> None:
    # Lightning accepts 0 and then skips the whole fit: no step, not even step 0's measurements.
    ok = (_is_int(max_epochs) and (max_epochs >= 1 or max_epochs == -1)) or (
        allow_none and max_epochs is None
    )
    allowed = "an integer >= 1 or -1 (-1: no limit, as in Lightning)"
    if allow_none:
        allowed += " or null (Lightning's default)"
    if max_epochs == 0 and _is_int(max_epochs):
        raise ConfigError(
            f"{key} must be {allowed}, got 0: 0 epochs train nothing "
            "(python scripts/inspect_init.py <overrides> shows the network at step 0)"
        )
    _require(ok, key, allowed, max_epochs)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): no bound
        return None


def check_parameter_memory(width: Any, depth: int, widths: list[int]) -> None:
    """Refuse a network whose training state alone would not fit in this machine's memory."""
    # At least one input feature and one output: a lower bound whatever the data.
    sizes = [1, *widths, 1]
    params = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    need = params * TRAINING_BYTES_PER_PARAMETER
    memory = _physical_memory()
    if memory is not None and need > memory:
        raise ConfigError(
            f"width={width!r} and depth={depth} need at least {need / 2**30:,.0f} GiB to train "
            f"({params:,} parameters x 4 bytes x 4: weights, gradients, Adam's two moments), "
            f"more than this machine's {memory / 2**30:,.0f} GiB of memory; "
            "use a smaller width or depth"
        )


def check_knobs(cfg: DictConfig) -> None:
    """The top-level knobs, and the group keys that take their values; ``ConfigError`` if bad."""
    # Imported here: Hydra loads this module for SeparateJobDirs before any job runs, and
    # the command line waits for torch (which fcn_research.model imports) only once one does.
    from fcn_research.data.base import check_steps_per_batch
    from fcn_research.model import hidden_widths

    width = cfg.get("width")
    if isinstance(width, ListConfig):
        width = OmegaConf.to_object(width)
    try:
        widths = hidden_widths(width, cfg.get("depth"))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    check_parameter_memory(width, cfg.get("depth"), widths)
    _check_seed("seed", cfg.get("seed"))
    _check_lr("lr", cfg.get("lr"))
    _check_batch_size("batch_size", cfg.get("batch_size"))
    _check_max_epochs("max_epochs", cfg.get("max_epochs"), allow_none=False)
    threads = cfg.get("num_threads")
    ok = threads is None or (_is_int(threads) and threads >= 1)
    _require(ok, "num_threads", "an integer >= 1 or null (torch's default)", threads)
    try:
        check_steps_per_batch(cfg.get("steps_per_batch", 1))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    resume = cfg.get("resume", True)
    _require(isinstance(resume, bool), "resume", "true or false", resume)
    weights = cfg.get("test_weights", "last")
    allowed = "'last' (the last epoch's weights) or 'best_val' (the best validation epoch's)"
    _require(weights in ("last", "best_val"), "test_weights", allowed, weights)
    # The values the code uses: a user may override these directly (optimizer.lr=0.1).
    for group, key, check in (
        ("optimizer", "lr", _check_lr),
        ("data", "batch_size", _check_batch_size),
        ("data", "seed", _check_seed),
    ):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and key in node:
            check(f"{group}.{key}", node[key])
    trainer = cfg.get("trainer")
    if isinstance(trainer, DictConfig) and "max_epochs" in trainer:
        _check_max_epochs("trainer.max_epochs", trainer.max_epochs, allow_none=True)


def _build_partial(group: str, node: DictConfig, *args: Any) -> Any:
    """Call the group's partial once, as training will; its errors become ``ConfigError``."""
    target = node.get("_target_", "?")
    try:
        return instantiate(node)(*args)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"{group} ({target}): {err}; see {target}'s documentation for the allowed values"
        ) from err


def check_partials(cfg: DictConfig) -> None:
    """Build the activation and the optimizer (on a stand-in parameter) once."""
    import torch  # see check_knobs: this module stays importable without torch
    from torch import nn

    from fcn_research.model import checked_activation

    if cfg.get("activation") is not None:
        act = _build_partial("activation", cfg.activation)
        try:
            checked_activation(act)
        except TypeError as err:
            raise ConfigError(f"activation ({cfg.activation.get('_target_', '?')}): {err}") from err
    if cfg.get("optimizer") is not None:
        _build_partial("optimizer", cfg.optimizer, [nn.Parameter(torch.zeros(1))])
    if cfg.get("initializer") is not None:
        instantiate(cfg.initializer)  # its constructor checks its arguments


def check_data(cfg: DictConfig) -> None:
    """Build the datamodule and let it get its files (Lightning's ``prepare_data``: MNIST finds
    them, or downloads them if asked); nothing is read or generated yet."""
    if cfg.get("data") is None:
        return
    datamodule = instantiate(cfg.data)
    try:
        datamodule.prepare_data()
    except (FileNotFoundError, ImportError) as err:  # files missing, or no downloader
        raise ConfigError(str(err)) from err


def job_hydra_node(cfg: DictConfig | None) -> Any:
    """A job's Hydra settings: its config's own ``hydra`` node (a stack member's config
    carries its job's), else the running job's ``HydraConfig``, else None."""
    if cfg is not None and cfg.get("hydra") is not None:
        return cfg.hydra
    return HydraConfig.get() if HydraConfig.initialized() else None


@functools.cache
def _arguments(target: str) -> frozenset[str] | None:
    """The keys a node with this ``_target_`` takes; None: any (``**kwargs``) or unknown."""
    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except Exception:  # not importable or no signature: instantiating it says why
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    named = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return frozenset(named) | HYDRA_KEYS


@functools.cache
def _global_knobs() -> frozenset[str]:
    """Top-level keys that conf/train.yaml or a ``_global_`` option (a launcher preset, an
    experiment) defines: what ``++key=value`` may set."""
    keys: set[str] = set()
    for path in [CONF_DIR / "train.yaml", *sorted(CONF_DIR.glob("*/*.yaml"))]:
        text = path.read_text(encoding="utf-8")
        if path.name != "train.yaml" and "@package _global_" not in text.split("\n", 1)[0]:
            continue
        node = OmegaConf.create(text)
        if isinstance(node, DictConfig):
            keys |= {str(k) for k in node if k not in ("defaults", "hydra")}
    return frozenset(keys)


def _unknown(
    key: str, name: str, candidates: list[str], why: str, prefix: str = "", fallback: str = ""
) -> str:
    """``unknown key`` ``key``, with the candidate nearest to ``name`` (its last part)."""
    match = difflib.get_close_matches(name, candidates, n=1)
    hint = f"did you mean '{prefix}{match[0]}'?" if match else fallback
    return f"unknown key {key!r}{why}" + (f" ({hint})" if hint else "")


def _interpolated(name: str, *nodes: Any) -> bool:
    """Whether an interpolation in ``nodes`` refers to the top-level key ``name``."""
    pattern = re.compile(rf"\$\{{[^}}]*\b{re.escape(name)}\b")
    return any(
        isinstance(node, DictConfig) and pattern.search(OmegaConf.to_yaml(node)) is not None
        for node in nodes
    )


def _unknown_key(
    cfg: DictConfig, hydra_node: Any, key: str, forced: bool, added: set[str]
) -> str | None:
    """Why the added ``key`` is one the run does not use, or None."""
    parts = key.split(".")
    head = parts[0]
    if len(parts) == 1 or head not in hydra_node.runtime.choices:
        # A top-level key that is no config group: a `+key` is new, so only an interpolation
        # can use it; a `++key` may also set a knob that the config tree defines.
        known = _interpolated(head, cfg, hydra_node) or (
            (forced or len(parts) > 1) and head in _global_knobs()
        )
        if not known:
            candidates = [str(k) for k in cfg if k not in ("hydra", head) and k not in added]
            where = f": this run has no setting or config group {head!r}" if len(parts) > 1 else ""
            return _unknown(key, head, candidates, where, fallback=CFG_JOB)
        if len(parts) == 1:
            return None
    for i in range(1, len(parts)):
        parent, child = ".".join(parts[:i]), parts[i]
        node = OmegaConf.select(cfg, parent, default=None)
        if not isinstance(node, DictConfig):
            return None  # a list or a value: Hydra refuses what it cannot set there
        if "_target_" in node:
            target = str(node["_target_"])
            accepted = _arguments(target)
            if accepted is not None and child not in accepted:
                why = f": {target} takes no argument {child!r}"
                return _unknown(key, child, sorted(accepted - HYDRA_KEYS), why, f"{parent}.")
        elif i == 1 and parent in OBJECT_DICTS:
            entry = node.get(child)
            if len(parts) == 2 and not (
                entry is None or (isinstance(entry, DictConfig) and "_target_" in entry)
            ):
                return (
                    f"{key} must be a node with a _target_ (the class to build) or null, "
                    f"got {entry!r}"
                )
        elif i == 2 and head in OBJECT_DICTS:
            return (
                f"unknown key {key!r}: {parent} has no _target_ (each entry of {head} names the "
                f"class it builds: +{parent}._target_=...)"
            )
        elif i == len(parts) - 1 and not forced:
            candidates = [str(k) for k in node if f"{parent}.{k}" not in added]
            return _unknown(key, child, candidates, "", f"{parent}.", CFG_JOB)
    return None


def check_overrides(cfg: DictConfig) -> None:
    """Refuse a ``+key`` / ``++key`` override that adds a key the run does not use.

    Hydra adds whatever it is asked to, and nothing reads a key the code does not know, so
    ``+widht=64`` would train at the default width. Used are: a config group (``+experiment=``),
    an argument of the class a node builds (``+trainer.max_steps``, Lightning's ``Trainer``;
    ``+optimizer.weight_decay``; any key where the class takes ``**kwargs``), a new entry of
    ``callbacks`` or ``logger`` with its ``_target_``, and a top-level key that an
    interpolation reads.
    """
    hydra_node = job_hydra_node(cfg)
    if hydra_node is None:
        return
    lines = [str(line) for line in hydra_node.overrides.task]
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except HydraException:
        return  # Hydra reports its own parse errors
    added = [o for o in overrides if (o.is_add() or o.is_force_add()) and o.package is None]
    added_keys = {o.key_or_group for o in added}
    for override in added:
        key = override.key_or_group
        if key in hydra_node.runtime.choices or key.split(".")[0] == "hydra":
            continue  # a config group's option (Hydra checks it), or Hydra's own settings
        message = _unknown_key(cfg, hydra_node, key, override.is_force_add(), added_keys)
        if message is not None:
            raise ConfigError(message)


@functools.cache
def _annotations(target: str) -> dict[str, Any]:
    try:
        built = get_object(target)
        return typing.get_type_hints(built.__init__ if isinstance(built, type) else built)
    except Exception:  # not importable, or annotations that do not resolve: nothing to check
        return {}


def _mismatch(value: Any, hint: Any) -> str | None:
    """What ``hint`` allows, if ``value`` is not of it; None if it is, or cannot be told."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = []
    for member in typing.get_args(hint) if union else (hint,):
        if member is type(None):
            ok, text = value is None, "null"
        elif member is bool:
            ok, text = isinstance(value, bool), "true or false"
        elif member is int:
            ok, text = _is_int(value), "an integer"
        elif member is float:
            ok, text = _is_number(value), "a finite number"
        elif member is str:
            ok, text = isinstance(value, str), "a string"
        elif typing.get_origin(member) is Literal:
            options = typing.get_args(member)
            ok, text = value in options, " or ".join(repr(o) for o in options)
        else:
            return None  # a type a config value is not checked against here (a Tensor, a Path)
        if ok:
            return None
        allowed.append(text)
    return " or ".join(allowed)


def _check_node_values(node: DictConfig, path: str) -> None:
    target = node.get("_target_")
    hints = _annotations(str(target)) if target is not None else {}
    for key in node:
        key = str(key)
        if key.startswith("_"):
            continue
        value = node[key]
        if isinstance(value, DictConfig):
            _check_node_values(value, f"{path}.{key}")
        elif key in hints:
            allowed = _mismatch(value, hints[key])
            if allowed is not None:
                raise ConfigError(
                    f"{path}.{key} must be {allowed} (an argument of {target}), got {value!r}"
                )


def check_group_values(cfg: DictConfig) -> None:
    """The groups' values against the annotations of the classes they build: a bool that is
    ``maybe``, a float that is ``abc`` or NaN would be misread, or fail only in training."""
    for group in VALUE_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            _check_node_values(node, group)


def check_config(cfg: DictConfig) -> None:
    """All that can be checked before training; ``ConfigError`` names the first bad value."""
    check_overrides(cfg)
    check_knobs(cfg)
    check_group_values(cfg)
    check_partials(cfg)
    check_data(cfg)


def refusal(err: BaseException) -> str | None:
    """The one-line message of an error that refuses the config, or None for any other error."""
    if isinstance(err, ConfigError):
        return " ".join(str(err).split())
    if not isinstance(err, InstantiationException):
        return None
    text = str(err)
    key = re.search(r"^full_key: (.+)$", text, re.MULTILINE)
    target = re.search(r"target '([^']+)'", text)
    where, what = key.group(1) if key else "config", target.group(1) if target else "?"
    cause = err.__cause__
    if text.startswith("Error locating target"):
        message = f"{where}: cannot import _target_ {what} ({type(cause).__name__}: {cause})"
    elif cause is not None:
        message = f"{where}: {cause} ({what})"
    else:
        message = f"{where}: {text.splitlines()[0]}"
    return " ".join(message.split())


def exit_refused(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _job_count(override: Override) -> int:
    try:
        return len(list(override.sweep_string_iterator()))
    except (HydraException, TypeError, ValueError):  # interval(): as many as the sweeper asks
        return 2


def shared_job_dirs(config: DictConfig) -> str | None:
    """Why the sweep's jobs would share job dirs (a swept key left out of the names), or None."""
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if "override_dirname" not in str(subdir):
        return None  # the user names job dirs some other way (e.g. by hydra.job.num)
    exclude = set(config.hydra.job.config.override_dirname.exclude_keys or [])
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except HydraException:
        return None  # Hydra reports its own parse errors
    # As Hydra's sweeper does: the last override of a key wins (task overrides beat params).
    final = {o.key_or_group: o for o in parsed}
    if all(key in exclude for key in final):
        return None  # no job has a name from its overrides: dirs are job_<n>, all distinct
    for key, override in final.items():
        if key in exclude and override.is_sweep_override() and _job_count(override) > 1:
            return (
                f"{override.input_line} sweeps {key}, which "
                "hydra.job.config.override_dirname.exclude_keys leaves out of job dir names, "
                "so its jobs would share one dir and all but the first would be skipped; "
                f"run one sweep per value of {key}, or take it out of exclude_keys"
            )
    return None


class SeparateJobDirs(Callback):
    """Before a multirun starts: refuse it if two of its jobs would share a job dir."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        message = shared_job_dirs(config)
        if message is not None:
            exit_refused(message)
