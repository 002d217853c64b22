"""Ray Train's environment settings for a run (pipeline/train/ray_train_env.py): the preemption
watcher only where a node can be lost and the run go on, and settings that the user's own
exports override and that never outlive the run; the ingest options of the datasets it splits."""

from __future__ import annotations

import os

import pytest

from pipeline.common.environ import environ_defaults
from pipeline.train.ray_train_env import HEALTH_CHECK_ENV, PREEMPTION_WATCHER_ENV, watch_preemptions


def test_preemption_watcher_off_on_a_local_one_node_ray_only():
    assert not watch_preemptions(None, {}, alive_nodes=1)  # the embedded default, the tests' Ray
    assert watch_preemptions(None, {}, alive_nodes=2)  # an in-process ray.init() that joined several nodes
    assert watch_preemptions("127.0.0.1:6379", {}, alive_nodes=1)  # run_training(address=...)
    assert watch_preemptions(None, {"RAY_ADDRESS": "http://127.0.0.1:8265"}, alive_nodes=1)  # ray job submit


def test_settings_apply_for_the_run_only_and_the_users_exports_win(monkeypatch):
    monkeypatch.delenv(HEALTH_CHECK_ENV, raising=False)
    monkeypatch.setenv(PREEMPTION_WATCHER_ENV, "1")  # exported by the user
    with environ_defaults({HEALTH_CHECK_ENV: "0.5", PREEMPTION_WATCHER_ENV: "0"}) as applied:
        assert applied == {HEALTH_CHECK_ENV: "0.5", PREEMPTION_WATCHER_ENV: "1"}
        assert os.environ[HEALTH_CHECK_ENV] == "0.5"
    assert HEALTH_CHECK_ENV not in os.environ  # gone with the run: not inherited by later runs or children
    assert os.environ[PREEMPTION_WATCHER_ENV] == "1"


def test_settings_are_removed_when_the_run_fails(monkeypatch):
    monkeypatch.delenv(HEALTH_CHECK_ENV, raising=False)
    with pytest.raises(RuntimeError), environ_defaults({HEALTH_CHECK_ENV: "0.5"}):
        raise RuntimeError("the run failed")
    assert HEALTH_CHECK_ENV not in os.environ


def test_the_pinned_ray_train_reads_both_and_hands_them_to_its_controller():
    from ray.train.v2._internal import constants

    assert constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR == HEALTH_CHECK_ENV
    assert constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR == PREEMPTION_WATCHER_ENV
    with environ_defaults({HEALTH_CHECK_ENV: "0.5", PREEMPTION_WATCHER_ENV: "0"}):
        propagated = constants.get_env_vars_to_propagate()
    assert propagated[HEALTH_CHECK_ENV] == "0.5" and propagated[PREEMPTION_WATCHER_ENV] == "0"


def test_the_training_datasets_keep_their_order_unless_the_config_says_not():
    """data.preserve_order (default true) reaches Ray Data's execution options for the datasets
    Ray Train splits; Ray Train's other ingest defaults stay."""
    from ray.train import DataConfig

    from pipeline.train.config import JobConfig
    from pipeline.train.launch import ingest_options

    ray_default = DataConfig.default_ingest_options()
    ordered = ingest_options(JobConfig())
    unordered = ingest_options(JobConfig.model_validate({"data": {"preserve_order": False}}))
    assert ordered.preserve_order and not unordered.preserve_order
    for options in (ordered, unordered):
        assert options.resource_limits == ray_default.resource_limits
        assert options.exclude_resources == ray_default.exclude_resources
