"""What a killed job's embedded Ray cluster leaves behind, and its cleanup by the next job.

A job that starts its own local Ray (no RAY_ADDRESS) owns the processes Ray starts for it. If
its driver is SIGKILLed, Ray's raylet and workers go, but Ray's agents can outlive it: seen here,
its dashboard and runtime-env agents were still running 30 s later (once gone by 90 s; after a
killed test run, still there 10 minutes later, and deaf to SIGTERM). So while it runs, the
driver records the process ids (with their start times) of everything it started, and the next
job to start an embedded cluster stops what a dead driver's record still lists, and says so.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.common.files import write_text_atomic

RECORD_DIR = Path(tempfile.gettempdir()) / "ple-embedded-ray"
RECORD_EVERY_S = 2.0  # Ray starts workers all the time: the record follows


def _identity(pid: int) -> list[float] | None:
    """[pid, start time] of a live process, None when there is none (a reused pid has another
    start time, so it is never mistaken for the recorded process)."""
    import psutil

    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.Error:
        return None


def _alive(identity: list[float]) -> bool:
    now = _identity(int(identity[0]))
    return now is not None and now[1] == identity[1]


def _write(path: Path, record: dict) -> None:
    write_text_atomic(path, json.dumps(record))


class EmbeddedClusterRecord:
    """Kept while this driver runs an embedded cluster: its own identity and that of every
    process it started (rewritten every RECORD_EVERY_S by a daemon thread), removed at exit."""

    def __init__(self, record_dir: Path = RECORD_DIR) -> None:
        import psutil

        record_dir.mkdir(parents=True, exist_ok=True)
        self.path = record_dir / f"{os.getpid()}.json"
        self.driver = _identity(os.getpid())
        self._me = psutil.Process()
        self._stop = threading.Event()
        # Held while the record is written and while it is removed: without it, a write under way
        # when close() removed the record put it back after a clean exit, a stale record that the
        # next job had to clear (and reported nothing for, its processes being gone).
        self._writing = threading.Lock()
        self.update()
        self._thread = threading.Thread(target=self._loop, name="embedded-ray-record", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def update(self) -> None:
        import psutil

        children = []
        for child in self._me.children(recursive=True):
            try:
                children.append([child.pid, child.create_time()])
            except psutil.Error:
                continue
        with self._writing:
            if not self._stop.is_set():  # closed meanwhile: the record stays removed
                _write(self.path, {"driver": self.driver, "processes": children})

    def _loop(self) -> None:
        while not self._stop.wait(RECORD_EVERY_S):
            self.update()

    def close(self) -> None:
        """At a normal exit (Ray has stopped its processes): no record is left, even when the
        recording thread was writing it at that moment."""
        with self._writing:
            self._stop.set()
            self.path.unlink(missing_ok=True)


def clean_leftovers(log: Callable[[str], None] = print, record_dir: Path = RECORD_DIR) -> int:
    """Stop (SIGKILL) the processes that drivers which are gone recorded and that still run;
    returns how many. Records of live drivers (another job running now) are left alone."""
    import psutil

    stopped = 0
    for path in sorted(record_dir.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("driver") and _alive(record["driver"]):
            continue
        left = [p for p in record.get("processes", []) if _alive(p)]
        for pid, _ in left:
            try:
                psutil.Process(int(pid)).kill()  # SIGKILL: leftover agents ignore SIGTERM
            except psutil.Error:
                continue
        if left:
            stopped += len(left)
            pids = " ".join(str(int(p)) for p, _ in left)
            log(f"[ray] stopped {len(left)} processes left by an earlier job killed while it ran (pids {pids})")
        path.unlink(missing_ok=True)
    return stopped
