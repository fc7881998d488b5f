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
from typing import Any

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
