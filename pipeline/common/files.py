"""Small files written whole: a reader, or a run killed midway, sees the old content or the new,
never half of either. Every room that publishes a JSON record or a report writes it through here."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Temporary names are `.<name>.tmp-<pid>` beside the file: hidden from listings that skip dot
# files, and recognisable by their owners' clean-ups (scoring's output, the registry's pointer).
TMP_MARK = ".tmp-"


def temp_name(path: str | Path) -> str:
    """The temporary name `write_text_atomic` writes `path` under before renaming it."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f".{name}{TMP_MARK}{os.getpid()}")


def fsync_path(path: str | Path, directory: bool = False) -> None:
    """Flush a file, or a directory's entries (after a rename in it), to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> None:
    """Write `text` to `path` under a temporary name beside it, then rename it over `path` (one
    atomic step on POSIX filesystems). A failed write leaves `path` as it was and no temporary
    file. `durable`: also fsync the file before the rename and the directory after it, so that
    the new content survives a power loss (the registry's pointer and records)."""
    tmp = temp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    if durable:
        fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


def no_nan(x):
    """`x` with every float NaN in it (through dicts, lists and tuples) as None: strict JSON has
    no NaN (a metric a set cannot measure, the spread of one seed)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [no_nan(v) for v in x]
    return x


def make_output_dir(path: str | Path, flag: str) -> None:
    """Create the folder `path` (and its parents) for a job's output, or raise ConfigError
    naming `flag` (the option that named it) and why: a file in the way, no permission."""
    from pipeline.common.config import ConfigError

    path = Path(os.path.abspath(path))
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
        raise ConfigError(f"{flag} {path}: {blocking} is a file, not a folder") from None
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot create the folder ({err.strerror or err})") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path}: the folder is not writable")


@contextmanager
def exclusive_lock(path: str | Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an advisory lock (fcntl.flock) on the file `path`, made if missing, for the block:
    one job at a time on what it guards. The kernel releases it when the process ends, however
    it ends. Held by another process: raise `busy(holder)`, `holder` being what that process
    recorded in the file (pid, host, since when, its command)."""
    from pipeline.common.logs import this_command

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise busy(holder) from None
    try:
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}: {this_command()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
