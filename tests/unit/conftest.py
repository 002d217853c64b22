"""Unit tests: one process, no Ray. A test that starts a process (a subprocess, a spawned
rank, `ray.init`) fails here with a pointer to tests/integration, so that `make test-fast`
stays fast and needs nothing but this interpreter."""

from __future__ import annotations

import logging
import multiprocessing.process
import subprocess
import sys

import pytest

from pipeline.common.logs import RAY_COLOR_ENV, RAY_DATA_LOGGING_ENV, RAY_SKIP_ENV, VERBOSE_ENV


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


@pytest.fixture
def clean_logging(monkeypatch):
    """configure_logs changes this process's logging: put back what pytest had."""
    monkeypatch.setenv(VERBOSE_ENV, "0")
    for name in (RAY_SKIP_ENV, RAY_DATA_LOGGING_ENV, RAY_COLOR_ENV):  # set by configure_logs: restored afterwards
        monkeypatch.delenv(name, raising=False)
    import ray.data  # noqa: F401  # their loggers exist before the snapshot, as configure_logs imports them
    import torch  # noqa: F401

    loggers = [logging.getLogger(), logging.getLogger("torchrec"), logging.getLogger("fbgemm_gpu")]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = {
        lg: (list(lg.handlers), {h: list(h.filters) for h in lg.handlers}, lg.level, lg.propagate) for lg in loggers
    }
    yield
    logging.captureWarnings(False)
    for lg, (handlers, filters, level, propagate) in saved.items():
        for h in list(lg.handlers):
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        for h in handlers:
            h.filters[:] = filters[h]
        lg.setLevel(level)
        lg.propagate = propagate
