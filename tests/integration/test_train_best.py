"""Early stopping in the distributed training job: it stops at the evaluation the rule says,
keeps the best evaluation's checkpoint, and exports exactly that checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.export_metrics import export_metrics
from helpers.small_job import small_job_config
from pipeline.data.files import list_day_files
from pipeline.train.checkpoint import EXTRA_FILE
from pipeline.train.early_stopping import BestTracker
from pipeline.train.launch import run_training


def test_early_stopping_exports_the_best_checkpoint(ray_local, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = small_job_config(
        tmp_path,
        "train.epochs=4",
        "train.eval_every_steps=4",
        # A gain of 0.01 mean AUC every 4 steps does not last four epochs: the run stops.
        "train.early_stopping={patience: 1, min_delta: 0.01}",
    )
    result = run_training(cfg)
    m = result.metrics
    best = int(m["best/step"])
    evaluations = [int(h["step"]) for h in result.history]
    assert m["train/stopped_early"] == 1
    # It stopped at the first evaluation the rule says to stop at, well before 4 epochs' 52 steps.
    rule = BestTracker(cfg.train.early_stopping, ["ctr", "cvr"])
    stops = [rule.update(s, h) for s, h in zip(evaluations, result.history, strict=True)]
    assert stops.index(True) == len(stops) - 1 and evaluations[-1] == m["final_step"] < 52
    scores = [(h["val/ctr/auc"] + h["val/cvr/auc"]) / 2 for h in result.history]
    assert scores[evaluations.index(best)] == max(scores) and best == rule.best_step
    # The export is the best evaluation's checkpoint, and reproduces its metrics.
    extra = json.loads(Path(result.checkpoint_dir, EXTRA_FILE).read_text())
    local, meta = export_metrics(result.export_dir, list_day_files(cfg.data.root, *cfg.data.val_days))
    assert extra["step"] == meta["step"] == best
    at_best = result.history[evaluations.index(best)]
    for task in ("ctr", "cvr"):
        assert abs(local[f"{task}/auc"] - at_best[f"val/{task}/auc"]) < 1e-3
        assert m[f"val/{task}/auc"] == at_best[f"val/{task}/auc"]
