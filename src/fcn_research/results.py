"""The job's ``result.json``: written atomically (temp file + rename), read tolerantly."""

from __future__ import annotations

import json
import math
import os
import tempfile
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


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(data), f, indent=2, sort_keys=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
