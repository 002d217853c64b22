"""The training job's own checks: config errors name the key, a directory that is not an export
is refused (tests/integration/test_train_job.py runs the job)."""

from __future__ import annotations

import pytest

from pipeline.common.config import ConfigError
from pipeline.train.config import load_config
from pipeline.train.export import ExportError, load_export


def test_config_errors_name_the_key(repo_root):
    with pytest.raises(ConfigError, match=r"train\.bogus"):
        load_config(repo_root / "configs/jobs/train_local.yaml", ["train.bogus=1"])
    with pytest.raises(ConfigError, match=r"loss_weights"):
        load_config(repo_root / "configs/jobs/train_local.yaml", ["train.loss_weights=[1.0]"])


def test_load_export_rejects_a_directory_that_is_not_one(tmp_path):
    with pytest.raises(ExportError, match="not an exported model"):
        load_export(str(tmp_path))
