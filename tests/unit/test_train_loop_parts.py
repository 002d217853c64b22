"""The worker loop's parts: the throughput meter and the cadence that decides what runs after
a step (tests/integration/test_train_job.py runs the loop itself)."""

from __future__ import annotations

import pytest

from pipeline.common.logs import duration
from pipeline.train.cadence import Cadence, StepActions
from pipeline.train.config import TrainConfig
from pipeline.train.progress import eval_line, progress_line
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
    cadence = Cadence(TrainConfig(log_every_steps=5, log_every_s=None, eval_every_steps=4, checkpoint_every_steps=6))
    assert cadence.at(3) == StepActions()
    assert cadence.at(4) == StepActions(evaluate=True)
    assert cadence.at(5) == StepActions(log=True)
    assert cadence.at(6) == StepActions(checkpoint=True)
    assert cadence.at(12) == StepActions(evaluate=True, checkpoint=True)  # one report with both
    assert cadence.at(60) == StepActions(log=True, evaluate=True, checkpoint=True)
    assert not cadence.at(3).report and cadence.at(4).report and cadence.at(6).report


def test_cadence_without_evaluation_or_checkpoints_only_logs():
    clock = iter(range(0, 1000, 2))  # each step takes 2 s
    cadence = Cadence(TrainConfig(), clock=lambda: next(clock))  # the defaults: a line every 15 s
    actions = [cadence.at(step) for step in range(1, 21)]
    assert [s for s, a in zip(range(1, 21), actions, strict=True) if a.log] == [8, 16]  # at 16 s and 32 s
    assert not any(a.report for a in actions)


def test_progress_by_steps_and_by_seconds_together():
    now = [0.0]
    cadence = Cadence(TrainConfig(log_every_steps=100, log_every_s=60.0), clock=lambda: now[0])
    logged = []
    for step in range(1, 301):
        now[0] += 1.0 if step <= 150 else 0.1  # slow, then fast steps
        if cadence.at(step).log:
            logged.append(step)
    # 60 s after the start (step 60), then every 100 steps; a line by steps restarts the clock, so
    # the fast steps (150 s at step 150, 155 s at step 200) never wait 60 s.
    assert logged == [60, 100, 200, 300]


def test_evaluation_at_start_only_for_a_fresh_run():
    assert Cadence(TrainConfig(eval_at_start=True)).at_start(0) == StepActions(evaluate=True)
    assert Cadence(TrainConfig(eval_at_start=True)).at_start(30) == StepActions()  # resumed
    assert Cadence(TrainConfig()).at_start(0) == StepActions()


def test_progress_line_gives_the_epochs_eta_from_the_window_rate():
    line = progress_line(
        epoch=1,
        epochs=3,
        step=812,
        batch_in_epoch=31,
        steps_per_epoch=781,
        tasks=["ctr", "cvr"],
        losses=[0.40121, 0.3121],
        rows_per_s=25_600.0,
        rows_per_step=1024,
    )
    # 750 batches left at 25 steps/s: 30 s.
    assert line == "[train] epoch 2/3 step 812 (batch 31/781) loss ctr=0.4012 cvr=0.3121, 25,600 rows/s, epoch ETA 30 s"
    unknown = progress_line(
        epoch=0, epochs=1, step=5, batch_in_epoch=5, steps_per_epoch=None, tasks=["ctr"], losses=[0.5],
        rows_per_s=100.0, rows_per_step=10,
    )  # fmt: skip
    assert unknown == "[train] epoch 1/1 step 5 loss ctr=0.5000, 100 rows/s"
    assert [duration(s) for s in (4.4, 185, 3723)] == ["4 s", "3:05", "1:02:03"]


def test_eval_line_is_one_compact_line():
    metrics = {"val/ctr/auc": 0.74123, "val/ctr/gauc": 0.61, "val/cvr/auc": 0.7511, "val/cvr/logloss": 0.3}
    assert eval_line(400, metrics, ["ctr", "cvr"]) == "[eval] step 400: ctr AUC 0.7412 (GAUC 0.6100), cvr AUC 0.7511"
    best = eval_line(400, {**metrics, "best/score": 0.748, "best/step": 300.0}, ["ctr", "cvr"])
    assert best.endswith("; best 0.7480 at step 300")
