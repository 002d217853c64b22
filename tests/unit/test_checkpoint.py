"""Which checkpoint a run resumes from: the newest complete one (tests/integration/
test_checkpoint_resharding.py saves and loads them on several ranks)."""

from __future__ import annotations

import os

from pipeline.train.checkpoint import latest_checkpoint


def test_latest_checkpoint_ignores_incomplete_and_hidden_directories(tmp_path):
    def make(name: str, files: list[str]) -> None:
        os.makedirs(tmp_path / name)
        for f in files:
            (tmp_path / name / f).write_text("{}")

    make("step_000000003", [".metadata", "extra.json"])
    make("step_000000010", [".metadata", "extra.json"])
    make("step_000000020", [".metadata"])  # crashed before extra.json: not complete
    make(".step_000000030.incomplete", [".metadata", "extra.json"])
    make("notes", [])
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "step_000000010")
    assert latest_checkpoint(str(tmp_path / "missing")) is None
