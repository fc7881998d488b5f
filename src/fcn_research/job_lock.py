"""One process at a time in a job dir: an OS lock on ``<job dir>/.lock`` held while it trains.

A second launch of a running sweep, or a Ray retry of a job whose first attempt still runs,
would otherwise train in the same dir and overwrite each other's checkpoints and result.json.
The lock is ``fcntl.flock`` on an open file: the kernel drops it when its process exits,
however it exits (SIGKILL included), so a dead job never leaves a stale lock behind. The
lock file itself stays; it holds the holder's pid and host, for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_only

LOCK_FILE = ".lock"


class JobDirBusy(RuntimeError):
    """Another live process holds the job dir's lock."""


@contextmanager
def job_dir_lock(job_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``job_dir``'s lock for the block; raise ``JobDirBusy`` (naming the holder) if taken.

    Only global rank 0 locks: the other ranks of a multi-process job (Lightning's ``ddp``
    launcher, SLURM tasks) train in the same dir as part of the same job.
    """
    if rank_zero_only.rank != 0:
        yield
        return
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / LOCK_FILE
    # No O_TRUNC: a refused process must not erase the holder's pid and host.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown process"
            raise JobDirBusy(
                f"job dir {job_dir} is in use by {holder} (lock {path}); two processes must "
                "not train in one job dir: wait for it to finish, or stop it and re-run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
