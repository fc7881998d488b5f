"""The job's ``result.json``: written atomically (temp file + rename), read tolerantly; and the
atomic write itself, which every file the project writes for others to read goes through."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypedDict

RESULT_FILE = "result.json"
STATUSES = ("running", "completed", "diverged", "failed")


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf: a diverged run's loss is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside ``path`` for the block to write, renamed onto ``path`` when the block
    ends and removed if it fails: a reader never sees half a file, a failed write keeps the old."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so readers never see a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` so readers never see a half-written file."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False, allow_nan=False)
    write_atomic(path, text + "\n")


def read_result(job_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The job's result, or None when it has none (yet) or it cannot be parsed."""
    path = Path(job_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def update_result(job_dir: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the job's result.json (atomically) and return the new result."""
    result = {**(read_result(job_dir) or {}), **fields}
    write_json_atomic(Path(job_dir) / RESULT_FILE, result)
    return result


# ---- The schema of result.json (docs/results.md says what each field means)

Number = int | float
TASKS = ("binary", "multiclass", "regression")


class StackInfo(TypedDict):
    """``stack``: which stack a member trained in, and how many members trained together."""

    id: str
    members: int


class JobEnv(TypedDict):
    """``env``: where the job ran."""

    host: str
    CUDA_VISIBLE_DEVICES: str | None
    torch_threads: int


class _Written(TypedDict):
    """The fields in every result.json a job writes, from its first write on."""

    status: str
    overrides: list[str]
    hparams: dict[str, str | Number | bool | None]
    metrics: dict[str, Number | None]
    init: dict[str, Number | None]
    epochs: int
    wall_s: Number
    env: JobEnv


class Result(_Written, total=False):
    """A job's result.json: ``_Written``'s fields, then those a job adds as it goes. Readers
    (the report, the experiments page, the lr search) need only ``status``."""

    global_step: int
    theory: dict[str, Number | str | list[str] | None]
    task: str
    num_classes: int
    stack: StackInfo
    stack_wall_s: Number
    error: str


class InvalidResult(ValueError):
    """A result.json that does not follow ``Result``; the message names the field."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise InvalidResult(f"result.json field {field!r}: got {value!r}; allowed: {allowed}")


def _check_map(field: str, value: Any, ok: Any, allowed: str) -> None:
    _check(isinstance(value, dict), field, value, f"an object of {allowed}")
    for key, item in value.items():
        _check(ok(item), f"{field}.{key}", item, allowed)


def _check_exact(field: str, value: Any, schema: Any) -> None:
    """``value`` is an object with exactly the keys of the TypedDict ``schema``."""
    keys = set(schema.__annotations__)
    _check(isinstance(value, dict) and set(value) == keys, field, value, f"keys {sorted(keys)}")


def validate_result(result: Any, complete: bool = True) -> None:
    """Raise ``InvalidResult`` naming the first field of ``result`` that ``Result`` does not
    allow: an unknown key, a wrong type, a bad value; with ``complete``, a missing required one."""
    _check(isinstance(result, dict), "(top level)", type(result).__name__, "an object")
    allowed = Result.__annotations__
    for key in result:
        _check(key in allowed, key, result[key], f"no such field (fields: {sorted(allowed)})")
    if complete:
        for key in sorted(Result.__required_keys__ - set(result)):
            raise InvalidResult(f"result.json field {key!r} is missing")
    _check("status" in result, "status", None, "present in every result.json")
    checks = {
        "status": (lambda v: v in STATUSES, " | ".join(STATUSES)),
        "overrides": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "a list of strings",
        ),
        "epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "int >= 0"),
        "global_step": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "int >= 0",
        ),
        "wall_s": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "stack_wall_s": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        "task": (lambda v: v in TASKS, " | ".join(TASKS)),
        "num_classes": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "int >= 1",
        ),
        "error": (lambda v: isinstance(v, str), "a string"),
    }
    for key, (ok, allowed_value) in checks.items():
        if key in result:
            _check(ok(result[key]), key, result[key], allowed_value)
    numbers = (lambda v: v is None or _is_number(v), "numbers (null: NaN or inf)")
    for key in ("metrics", "init"):
        if key in result:
            _check_map(key, result[key], *numbers)
    if "hparams" in result:
        _check_map(
            "hparams",
            result["hparams"],
            lambda v: v is None or isinstance(v, str | int | float | bool),
            "strings, numbers, booleans or null",
        )
    if "theory" in result:
        _check_map(
            "theory",
            result["theory"],
            lambda v: (
                v is None
                or isinstance(v, str)
                or _is_number(v)
                or (isinstance(v, list) and all(isinstance(x, str) for x in v))
            ),
            "numbers, strings or lists of strings",
        )
    if "env" in result:
        env = result["env"]
        _check_exact("env", env, JobEnv)
        _check(isinstance(env["host"], str), "env.host", env["host"], "a string")
        cuda = env["CUDA_VISIBLE_DEVICES"]
        _check(cuda is None or isinstance(cuda, str), "env.CUDA_VISIBLE_DEVICES", cuda, "str|null")
        threads = env["torch_threads"]
        _check(isinstance(threads, int), "env.torch_threads", threads, "an int")
    if "stack" in result:
        stack = result["stack"]
        _check_exact("stack", stack, StackInfo)
        _check(isinstance(stack["id"], str), "stack.id", stack["id"], "a string")
        members = stack["members"]
        _check(isinstance(members, int) and members >= 1, "stack.members", members, "int >= 1")
