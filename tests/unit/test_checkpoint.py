"""Which checkpoint a run resumes from: the newest complete one (tests/integration/
test_checkpoint_resharding.py saves and loads them on several ranks); what a checkpoint that
does not fit says."""

from __future__ import annotations

import os
import pickle

from pipeline.common.config import differences
from pipeline.common.errors import EXIT_BAD_CONFIG, BadInputError
from pipeline.train.checkpoint import CheckpointMismatchError, latest_checkpoint, listed, shaping_settings
from pipeline.train.config import JobConfig


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


def test_a_mismatch_is_bad_config_and_keeps_what_changed_across_processes():
    """A checkpoint that does not fit ends the run as bad config (exit 78, not retried by
    FailFast) and reaches the driver, pickled, with the settings that changed."""
    err = CheckpointMismatchError("ckpt does not fit", ["model.task_experts: 2 there, 3 now"])
    assert isinstance(err, BadInputError) and err.exit_status == EXIT_BAD_CONFIG
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == "ckpt does not fit" and back.changed == ["model.task_experts: 2 there, 3 now"]


def test_shaping_settings_leave_out_what_no_tensor_depends_on():
    config = JobConfig().model_dump(mode="json")
    other = JobConfig.model_validate(
        {"name": "other", "train": {"epochs": 9, "dense_lr": 0.1, "init_from": "/ckpt"}, "cluster": {"num_workers": 4}}
    ).model_dump(mode="json")
    spec = {"name": "s", "tables": []}
    assert shaping_settings({"config": config, "spec": spec}) == shaping_settings({"config": other, "spec": spec})
    optimizer = JobConfig.model_validate({"train": {"sparse_optimizer": "adam"}}).model_dump(mode="json")
    assert differences(
        shaping_settings({"config": config, "spec": spec}), shaping_settings({"config": optimizer, "spec": spec})
    ) == ["train.sparse_optimizer: 'rowwise_adagrad' there, 'adam' now"]


def test_listed_says_how_many_it_leaves_out():
    assert listed(["a", "b"]) == "a; b"
    assert listed(["a", "b", "c"], limit=2) == "a; b and 1 more"
