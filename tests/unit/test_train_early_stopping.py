"""Early stopping and the best evaluation, on scripted metric sequences; its cadence and config."""

from __future__ import annotations

import math

import pytest

from pipeline.common.config import ConfigError
from pipeline.train.cadence import Cadence
from pipeline.train.config import TrainConfig, load_config
from pipeline.train.early_stopping import STEP_KEY, BestTracker, EarlyStopping

TASKS = ["ctr", "cvr"]


def _evals(mean_aucs: list[float], every: int = 10) -> list[tuple[int, dict]]:
    return [(every * (i + 1), {"val/ctr/auc": a + 0.01, "val/cvr/auc": a - 0.01}) for i, a in enumerate(mean_aucs)]


def _stops_at(tracker: BestTracker, evals: list[tuple[int, dict]]) -> int | None:
    for step, metrics in evals:
        if tracker.update(step, metrics):
            return step
    return None


def test_stops_after_patience_evaluations_without_improvement():
    tracker = BestTracker(EarlyStopping(patience=2), TASKS)
    assert _stops_at(tracker, _evals([0.60, 0.65, 0.64, 0.66, 0.655, 0.65, 0.70])) == 60
    assert tracker.best_step == 40 and tracker.best_score == pytest.approx(0.66)
    assert tracker.report()[STEP_KEY] == 40


def test_min_delta_and_no_patience():
    small_gains = _evals([0.60, 0.601, 0.602, 0.603])
    tracker = BestTracker(EarlyStopping(patience=2, min_delta=0.005), TASKS)
    assert _stops_at(tracker, small_gains) == 30  # gains too small to count for patience ...
    assert tracker.best_step == 30  # ... but the highest score is still the one exported
    keep_best_only = BestTracker(EarlyStopping(patience=None), TASKS)
    assert _stops_at(keep_best_only, _evals([0.7, 0.6, 0.5, 0.4])) is None and keep_best_only.best_step == 10


def test_one_metric_to_minimise_and_nan():
    cfg = EarlyStopping(metric="val/cvr/logloss", mode="min", patience=1)
    tracker = BestTracker(cfg, TASKS)
    evals = [(5, {"val/cvr/logloss": 0.5}), (10, {"val/cvr/logloss": float("nan")}), (15, {"val/cvr/logloss": 0.4})]
    assert _stops_at(tracker, evals) == 10  # a NaN is never an improvement
    assert tracker.best_step == 5 and tracker.best_score == -0.5
    with pytest.raises(ValueError, match="reports no val/ctr/gauc"):
        BestTracker(EarlyStopping(metric="mean_gauc"), TASKS).update(5, {"val/ctr/auc": 0.7})


def test_the_mean_auc_averages_the_tasks_the_validation_set_can_measure():
    """A validation set whose conversions are all 0 has no cvr AUC at any evaluation: the mean
    is ctr's alone, so the best evaluation is still found (with NaN in the mean, every score was
    NaN and the first evaluation stayed the best)."""
    evals = [(10 * (i + 1), {"val/ctr/auc": a, "val/cvr/auc": float("nan")}) for i, a in enumerate([0.6, 0.7, 0.65])]
    tracker = BestTracker(EarlyStopping(patience=None), TASKS)
    assert _stops_at(tracker, evals) is None
    assert tracker.best_step == 20 and tracker.best_score == pytest.approx(0.7)
    nothing = BestTracker(EarlyStopping(patience=None), TASKS)  # no task measurable: no score
    nothing.update(10, {"val/ctr/auc": float("nan"), "val/cvr/auc": float("nan")})
    assert nothing.best_score == -math.inf


def test_a_resumed_run_replays_its_history():
    evals = _evals([0.60, 0.65, 0.64])
    live = BestTracker(EarlyStopping(patience=2), TASKS)
    _stops_at(live, evals)
    resumed = BestTracker(EarlyStopping(patience=2), TASKS)
    assert not resumed.replay([{"step": s, **m} for s, m in evals])
    assert (resumed.best_step, resumed.best_score, resumed.since_best) == (live.best_step, live.best_score, 1)
    assert resumed.update(40, {"val/ctr/auc": 0.6, "val/cvr/auc": 0.6})  # the second evaluation without gain
    assert not math.isinf(resumed.best_score)


def test_every_evaluation_is_checkpointed_and_every_checkpoint_evaluated():
    watched = Cadence(TrainConfig(eval_every_steps=4, checkpoint_every_steps=6, early_stopping=EarlyStopping()))
    plain = Cadence(TrainConfig(eval_every_steps=4, checkpoint_every_steps=6))
    for step in (4, 6, 8, 12):
        a = watched.at(step)
        assert a.evaluate and a.checkpoint, step
    assert plain.at(4).checkpoint is False and plain.at(6).evaluate is False
    assert not watched.at(5).report


def test_early_stopping_needs_evaluations(repo_root):
    with pytest.raises(ConfigError, match="eval_every_steps"):
        load_config(repo_root / "configs" / "jobs" / "train_local.yaml", ["train.early_stopping={}"])
