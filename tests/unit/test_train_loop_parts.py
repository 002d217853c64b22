"""The worker loop's parts: the throughput meter and the cadence that decides what runs after
a step (tests/integration/test_train_job.py runs the loop itself)."""

from __future__ import annotations

import pytest

from pipeline.train.cadence import Cadence, StepActions
from pipeline.train.config import TrainConfig
from pipeline.train.throughput import ThroughputMeter


def test_meter_counts_each_epochs_first_step_apart_and_windows_reset():
    meter = ThroughputMeter(rows_per_step=100)
    for seconds, first in [(2.0, True), (0.5, False), (0.5, False), (1.0, True), (0.5, False)]:
        meter.record(seconds, first)
    assert meter.window_rows_per_s() == pytest.approx(500 / 4.5)
    assert meter.window_rows_per_s() == 0.0  # nothing since the last call
    meter.record(0.25, False)
    assert meter.window_rows_per_s() == pytest.approx(400.0)
    summary = meter.summary()
    assert summary["train/rows_per_s"] == pytest.approx(600 / 4.75)
    assert summary["train/rows_per_s_steady"] == pytest.approx(400 / 1.75)  # the two first steps left out
    assert summary["train/epoch_start_s"] == pytest.approx(3.0)


def test_meter_without_steps_reports_zero_rates():
    assert ThroughputMeter(64).summary() == {
        "train/rows_per_s": 0.0,
        "train/rows_per_s_steady": 0.0,
        "train/epoch_start_s": 0.0,
    }


def test_cadence_decides_log_evaluation_and_checkpoint_per_step():
    cadence = Cadence(TrainConfig(log_every_steps=5, eval_every_steps=4, checkpoint_every_steps=6))
    assert cadence.at(3) == StepActions()
    assert cadence.at(4) == StepActions(evaluate=True)
    assert cadence.at(5) == StepActions(log=True)
    assert cadence.at(6) == StepActions(checkpoint=True)
    assert cadence.at(12) == StepActions(evaluate=True, checkpoint=True)  # one report with both
    assert cadence.at(60) == StepActions(log=True, evaluate=True, checkpoint=True)
    assert not cadence.at(3).report and cadence.at(4).report and cadence.at(6).report


def test_cadence_without_evaluation_or_checkpoints_only_logs():
    cadence = Cadence(TrainConfig())  # the defaults: a progress line every 50 steps, nothing else
    actions = [cadence.at(step) for step in range(1, 201)]
    assert [s for s, a in zip(range(1, 201), actions, strict=True) if a.log] == [50, 100, 150, 200]
    assert not any(a.report for a in actions)


def test_evaluation_at_start_only_for_a_fresh_run():
    assert Cadence(TrainConfig(eval_at_start=True)).at_start(0) == StepActions(evaluate=True)
    assert Cadence(TrainConfig(eval_at_start=True)).at_start(30) == StepActions()  # resumed
    assert Cadence(TrainConfig()).at_start(0) == StepActions()
