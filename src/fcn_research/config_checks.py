"""Refuse a bad config before anything trains, in one line: the key, the value, what is allowed.

``check_config`` checks the top-level knobs and the values the code actually uses
(``optimizer.lr``, ``data.batch_size``, ``trainer.max_epochs`` interpolate the knobs unless a
user overrides them), and builds the activation and the optimizer once: both are partials,
called only later (the optimizer inside ``trainer.fit``). The other groups' constructors check
their own arguments; Hydra wraps what they raise in an ``InstantiationException`` that names
the config key, and ``refusal`` turns it into the same one line.

``SeparateJobDirs`` refuses a sweep, before any job starts, whose jobs would share a job dir.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces


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


def _check_max_epochs(key: str, max_epochs: Any, allow_none: bool) -> None:
    ok = (_is_int(max_epochs) and max_epochs >= -1) or (allow_none and max_epochs is None)
    allowed = "an integer >= -1 (-1: no limit, as in Lightning)"
    if allow_none:
        allowed += " or null (Lightning's default)"
    _require(ok, key, allowed, max_epochs)


def check_knobs(cfg: DictConfig) -> None:
    """The top-level knobs, and the group keys that take their values; ``ConfigError`` if bad."""
    # Imported here: Hydra loads this module for SeparateJobDirs before any job runs, and
    # the command line waits for torch (which fcn_research.model imports) only once one does.
    from fcn_research.model import hidden_widths

    width = cfg.get("width")
    if isinstance(width, ListConfig):
        width = OmegaConf.to_object(width)
    try:
        hidden_widths(width, cfg.get("depth"))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    seed = cfg.get("seed")
    ok = _is_int(seed) and 0 <= seed <= MAX_SEED
    _require(ok, "seed", f"an integer in [0, {MAX_SEED}]", seed)
    _check_lr("lr", cfg.get("lr"))
    _check_batch_size("batch_size", cfg.get("batch_size"))
    _check_max_epochs("max_epochs", cfg.get("max_epochs"), allow_none=False)
    threads = cfg.get("num_threads")
    ok = threads is None or (_is_int(threads) and threads >= 1)
    _require(ok, "num_threads", "an integer >= 1 or null (torch's default)", threads)
    steps = cfg.get("steps_per_batch", 1)
    key = "steps_per_batch (mini-batches per Lightning batch)"  # build()'s own wording
    _require(_is_int(steps), key, "an integer", steps)
    _require(steps >= 1, key, ">= 1", steps)
    resume = cfg.get("resume", True)
    _require(isinstance(resume, bool), "resume", "true or false", resume)
    weights = cfg.get("test_weights", "last")
    allowed = "'last' (the last epoch's weights) or 'best_val' (the best validation epoch's)"
    _require(weights in ("last", "best_val"), "test_weights", allowed, weights)
    # The values the code uses: a user may override these directly (optimizer.lr=0.1).
    for group, key, check in (
        ("optimizer", "lr", _check_lr),
        ("data", "batch_size", _check_batch_size),
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

    if cfg.get("activation") is not None:
        act = _build_partial("activation", cfg.activation)
        if not isinstance(act, nn.Module):
            raise ConfigError(
                f"activation ({cfg.activation.get('_target_', '?')}) must build an nn.Module, "
                f"got {type(act).__name__}; is the config node missing `_partial_: true`?"
            )
    if cfg.get("optimizer") is not None:
        _build_partial("optimizer", cfg.optimizer, [nn.Parameter(torch.zeros(1))])


def check_config(cfg: DictConfig) -> None:
    """All that can be checked before training; ``ConfigError`` names the first bad value."""
    check_knobs(cfg)
    check_partials(cfg)


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
