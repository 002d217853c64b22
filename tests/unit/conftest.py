"""Unit tests: one process, no Ray. A test that starts a process (a subprocess, a spawned
rank, `ray.init`) fails here with a pointer to tests/integration, so that `make test-fast`
stays fast and needs nothing but this interpreter."""

from __future__ import annotations

import multiprocessing.process
import subprocess
import sys

import pytest


class StartsAProcess(RuntimeError):
    pass


def _refuse(*_args, **_kwargs):
    raise StartsAProcess("a unit test must not start processes or Ray: move it to tests/integration")


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch):
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", _refuse)
    if "ray" in sys.modules:  # imported by the code under test (Ray Data's modules, say): never started
        monkeypatch.setattr(sys.modules["ray"], "init", _refuse)
    yield
