"""An exclusive lock file, so that only one daily retrain works on a registry at a time.

The lock is a small JSON file created with O_CREAT|O_EXCL (atomic on a local or NFSv3+ path):
{pid, host, started, command, token}. While held, a heartbeat thread touches it, so its mtime
says when its holder was last alive. A lock is *stale*, and is taken over with a message, when

  * its holder ran on this host and that pid no longer exists (a killed or crashed run), or
  * its heartbeat is older than `stale_after_s` (a holder on another host that died, or a pid
    reused by an unrelated process: neither heartbeats).

Taking over is race-free between two newcomers: the stale file is first renamed to a private
name, and only if the renamed file is still the one judged stale (same token) is it deleted;
otherwise (another newcomer replaced it in between) it is put back. Releasing deletes the file
only if it still holds our token.

FsspecLock is the same protocol for a registry at a URL (S3, GCS, ...): the create is fsspec's
exclusive mode (open "xb": a conditional put, If-None-Match / ifGenerationMatch=0), the heartbeat
is a `beat` time rewritten into the record (object stores have no utime), and a takeover checks
that the stale record is unchanged right before deleting it (no rename there: two newcomers
taking over the same stale lock within that check-then-delete window could both win; a lock
goes stale only after `stale_after_s` without heartbeat, so this needs a dead holder and two
runs started within milliseconds of each other).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from pipeline.common.errors import InUseError
from pipeline.common.logs import this_command

STALE_AFTER_S = 600.0  # a lock without a heartbeat for this long is taken over (the retrain's default)


class LockHeldError(InUseError):
    """Another live process holds the lock; the message names it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


class FileLock:
    def __init__(
        self,
        path: str,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.path = path
        self.stale_after_s = stale_after_s
        # Several heartbeats per staleness period: one late beat on a loaded machine is harmless.
        self.heartbeat_s = heartbeat_s or max(0.5, min(60.0, stale_after_s / 4))
        self.log = log
        self.token: str | None = None
        self.record: dict = {}  # what we wrote when we took the lock
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- reading a lock --------------------------------------------------------------------
    def read(self) -> dict | None:
        """The holder's record plus its heartbeat age ("age_s"), or None if there is no lock.
        An unreadable file (its creator was killed between create and write) reads as {}."""
        raw = self._read_raw()
        if raw is None:
            return None
        text, mtime = raw
        try:
            info = json.loads(text)
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        return {**info, "age_s": time.time() - info.get("beat", mtime)}

    # The storage primitives (FsspecLock replaces them).
    def _read_raw(self) -> tuple[str, float] | None:
        """(text, modification time), or None if there is no lock."""
        try:
            with open(self.path) as f:
                return f.read(), os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None

    def _create(self, record: dict) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
            f.flush()
            os.fsync(f.fileno())
        return True

    def _heartbeat(self, record: dict) -> None:
        os.utime(self.path)

    def _remove(self) -> None:
        os.unlink(self.path)

    def stale_reason(self, info: dict) -> str | None:
        if (
            info.get("host") == socket.gethostname()
            and isinstance(info.get("pid"), int)
            and not _pid_alive(info["pid"])
        ):
            return f"its process {info['pid']} on this host is gone"
        if info["age_s"] > self.stale_after_s:
            return f"no heartbeat for {info['age_s']:.0f}s (> {self.stale_after_s:.0f}s)"
        if "token" not in info and info["age_s"] > 5.0:
            return "it is empty or unreadable (its writer died while creating it)"
        return None

    @staticmethod
    def describe(info: dict) -> str:
        started = f"since {_fmt_time(info['started'])}" if "started" in info else "start time unknown"
        return (
            f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, {started}, "
            f"last heartbeat {info['age_s']:.0f}s ago" + (f": {info['command']}" if info.get("command") else "")
        )

    # -- acquire / release ------------------------------------------------------------------
    def acquire(self) -> FileLock:
        for _ in range(10):  # each retry follows a takeover or a lost race; a few suffice
            if self._try_create():
                self._start_heartbeat()
                return self
            info = self.read()
            if info is None:
                continue  # released meanwhile: try again
            reason = self.stale_reason(info)
            if reason is None:
                raise LockHeldError(
                    f"another retrain holds the lock {self.path}: {self.describe(info)}. "
                    f"If that process is gone for good, the lock is taken over automatically "
                    f"after {self.stale_after_s:.0f}s without heartbeat (or delete the file)."
                )
            self._take_over(info, reason)
        raise LockHeldError(f"could not acquire {self.path}: it keeps changing hands")

    def _try_create(self) -> bool:
        token = uuid.uuid4().hex
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": this_command(),
            "token": token,
        }
        if not self._create(self.record):
            return False
        self.token = token
        return True

    def _take_over(self, info: dict, reason: str) -> None:
        aside = f"{self.path}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it first
        try:
            with open(aside) as f:
                moved = json.loads(f.read() or "{}")
        except (OSError, ValueError):
            moved = {}
        if moved.get("token") != info.get("token"):
            # Between our read and our rename another newcomer replaced the stale lock with its
            # own live one: put it back. (A third newcomer creating a lock within these few
            # microseconds would be overwritten: accepted, the window is that of two syscalls.)
            os.rename(aside, self.path)
            return
        os.unlink(aside)
        self.log(f"[lock] took over stale lock {self.path} ({self.describe(info)}): {reason}")

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                with contextlib.suppress(OSError):
                    self._heartbeat(self.record)

        self._beat = threading.Thread(target=beat, name="lock-heartbeat", daemon=True)
        self._beat.start()

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        info = self.read()
        # Only our own lock: if ours was taken over as stale, the file is someone else's now.
        if info is not None and self.token is not None and info.get("token") == self.token:
            self._remove()
        self.token = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class FsspecLock(FileLock):
    """FileLock on an fsspec filesystem (a registry at a URL); see the module doc."""

    def __init__(
        self,
        fs,
        path: str,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__(path, stale_after_s, heartbeat_s, log)
        self.fs = fs

    def _read_raw(self) -> tuple[str, float] | None:
        try:
            text = self.fs.cat_file(self.path).decode()
        except FileNotFoundError:
            return None
        try:
            mtime = self.fs.modified(self.path).timestamp()
        except (NotImplementedError, FileNotFoundError, AttributeError):
            mtime = time.time()  # unknown: an unreadable record is judged by its `beat` only
        return text, mtime

    def _create(self, record: dict) -> bool:
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(json.dumps({**record, "beat": time.time()}).encode())
        except FileExistsError:
            return False
        return True

    def _heartbeat(self, record: dict) -> None:
        info = self.read()
        if info is not None and info.get("token") == record["token"]:  # still ours
            self.fs.pipe_file(self.path, json.dumps({**record, "beat": time.time()}).encode())

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path)

    def _take_over(self, info: dict, reason: str) -> None:
        now = self.read()
        if now is None or now.get("token") != info.get("token"):
            return  # released or taken over by someone else meanwhile: try again
        self._remove()
        self.log(f"[lock] took over stale lock {self.path} ({self.describe(info)}): {reason}")
