"""Helpers for tests that start, find and kill real processes (Ray heads, Ray Train workers).
Everything is found through this test's own process tree and stopped by pid: never a kill by
name, which could hit another user's Ray on the same machine."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

VENV_BIN = str(Path(sys.executable).parent)
# Keep every node of a test cluster on 127.0.0.1 (Ray otherwise picks the interface address).
# Usage stats off: a test cluster reports to nobody, and `ray start` and ray.cluster_utils start
# an actor for them (~2 CPU-s each on 2 cores).
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this venv first on PATH (so that `python` in a Ray
    job is this interpreter), loopback-only Ray."""
    return {**os.environ, **LOOPBACK_ENV, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **extra}


def wait_for(
    predicate: Callable[[], object],
    what: str,
    timeout: float = 300.0,
    interval: float = 0.2,
    context: Callable[[], str] | None = None,
):
    """Poll until `predicate()` is truthy (returns it). The timeout only turns a hang into a
    failure that says what never happened (and `context()`, e.g. a job's log); it is not a
    performance limit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{context()}" if context else ""))


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def find_descendant(pid: int, cmdline_part: str) -> psutil.Process | None:
    for proc in descendants(pid):
        try:
            if cmdline_part in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


def is_running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_tree(popen: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM a process we started (e.g. `ray start --block`, which then stops the Ray
    processes it launched), wait for it (at most `grace`), then SIGKILL whatever of its tree is
    left, by pid. The tree is not waited on as a whole: Ray's idle actors ignore SIGTERM once
    their node is gone, and waiting for them cost the whole grace period on every stop."""
    tree = [psutil.Process(popen.pid), *descendants(popen.pid)] if popen.poll() is None else descendants(popen.pid)
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)
    alive = [proc for proc in tree if is_running(proc)]
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
