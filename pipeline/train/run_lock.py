"""One job at a time per training run.

A second job with the same `output_dir` and `name` (a submission repeated while the first still
runs, say) would resume from the first one's checkpoints while the first one's Ray Train deletes
them, and both would write the same export. The driver therefore holds an advisory lock on
`<run>/.lock` (fcntl.flock: released by the kernel when the process ends, however it ends) for
the whole run; the second job stops at once, naming the holder. Output on a URL (no local
file to lock) is not locked.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.common.errors import InUseError
from pipeline.common.logs import this_command

LOCK_FILE = ".lock"


class RunInUseError(InUseError):
    """Another live job trains this run; the message names it (a job exits 75)."""


def empty_run(run_dir: str | os.PathLike) -> None:
    """Remove what the run directory holds but its lock (a run that never resumes starts so)."""
    for child in Path(run_dir).iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextmanager
def hold_run(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the run's lock for the block, or raise RunInUseError."""
    if "://" in os.fspath(run_dir):
        yield
        return
    path = Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunInUseError(
            f"run {Path(run_dir)} is being trained by another job ({holder}): wait for it to end, or give this "
            "one another name="
        ) from None
    try:
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}: {this_command()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
