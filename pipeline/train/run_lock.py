"""One job at a time per training run.

A second job with the same `output_dir` and `name` (a submission repeated while the first still
runs, say) would resume from the first one's checkpoints while the first one's Ray Train deletes
them, and both would write the same export. The driver therefore holds an advisory lock on
`<run>/.lock` (fcntl.flock: released by the kernel when the process ends, however it ends) for
the whole run; the second job stops at once, naming the holder. Output on a URL (no local
file to lock) is not locked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.common.errors import InUseError
from pipeline.common.files import exclusive_lock

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
    run = Path(run_dir)

    def busy(holder: str) -> RunInUseError:
        return RunInUseError(
            f"run {run} is being trained by another job ({holder}): wait for it to end, or give this one another name="
        )

    with exclusive_lock(run / LOCK_FILE, busy):
        yield
