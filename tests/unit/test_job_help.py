"""Every job's --help shows an example command, and shows it before any heavy import (the jobs
parse their arguments first: asking for help starts no Ray and loads no torchrec)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

import jobs

JOBS = sorted(m.name for m in pkgutil.iter_modules(jobs.__path__))


def test_every_job_is_listed():
    listed = {"train", "score", "evaluate", "retrain", "compare", "generate", "convert", "inspect", "registry"}
    assert listed <= set(JOBS)


@pytest.mark.parametrize("name", JOBS)
def test_help_shows_an_example_command(name, monkeypatch, capsys):
    module = importlib.import_module(f"jobs.{name}")
    monkeypatch.setattr(sys, "argv", [f"python -m jobs.{name}", "--help"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 0
    assert f"python -m jobs.{name} " in capsys.readouterr().out
