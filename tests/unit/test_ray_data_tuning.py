"""pipeline/common/ray_data_tuning.py: Ray Data's executor scheduling delays, lowered in this process
and in the embedded cluster's workers."""

import os

from helpers.worker_hook import run_worker_hook
from pipeline.common import ray_data_tuning
from pipeline.common.ray_data_tuning import shorten_scheduling_delays


def test_the_pinned_ray_has_both_delays_and_takes_ours(stock_delays):
    state, manager = stock_delays
    assert shorten_scheduling_delays() is True
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == ray_data_tuning.TASK_COMPLETION_WAIT_S < 0.1
    assert manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == ray_data_tuning.GLOBAL_LIMITS_REFRESH_S < 1


def test_a_shorter_delay_already_set_is_kept(stock_delays, monkeypatch):
    state, _ = stock_delays
    monkeypatch.setattr(state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", 0.005)
    shorten_scheduling_delays()
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == 0.005


def test_a_ray_without_the_constants_is_left_alone(stock_delays, monkeypatch, caplog):
    state, manager = stock_delays
    monkeypatch.delattr(state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S")
    assert shorten_scheduling_delays() is False
    assert manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == 1
    assert "left as they are" in caplog.text


def test_the_environment_can_keep_rays_own_delays(stock_delays, monkeypatch):
    state, manager = stock_delays
    monkeypatch.setenv(ray_data_tuning.STOCK_DELAYS_ENV, "1")
    assert shorten_scheduling_delays() is False
    assert (state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S) == (0.1, 1)


def test_the_embedded_clusters_worker_hook_applies_the_tuning(stock_delays):
    run_worker_hook()
    state, manager = stock_delays
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == ray_data_tuning.TASK_COMPLETION_WAIT_S
    assert manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S == ray_data_tuning.GLOBAL_LIMITS_REFRESH_S


def test_stock_delays_holds_rays_values_then_puts_ours_back(stock_delays, monkeypatch):
    state, manager = stock_delays
    monkeypatch.delenv(ray_data_tuning.STOCK_DELAYS_ENV, raising=False)
    shorten_scheduling_delays()
    with ray_data_tuning.stock_delays():
        assert (state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S) == (0.1, 1)
        assert shorten_scheduling_delays() is False  # read_days inside the block keeps them
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == ray_data_tuning.TASK_COMPLETION_WAIT_S
    assert ray_data_tuning.STOCK_DELAYS_ENV not in os.environ
