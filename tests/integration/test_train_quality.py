"""Does the distributed job learn what there is to learn? On generated logs with a planted
ground truth, the converged default (configs/jobs/train_quality.yaml, which the multi-task
comparison extends) must bring the validation AUC of each task within 0.015 of the best
achievable AUC (the AUC of the true probabilities on the same rows), and export the best
evaluation it kept. Measured at this commit: ctr 0.0086, cvr 0.0111 (the converged default aims at 0.01;
the last 0.001 on cvr costs a fourth epoch, i.e. the comparison's time target)."""

from __future__ import annotations

from pipeline.train.config import load_config
from pipeline.train.launch import run_training


def test_validation_auc_within_0015_of_best_achievable(ray_local, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = load_config("configs/jobs/train_quality.yaml", [f"data.root={tmp_path}/data", f"output_dir={tmp_path}/runs"])
    result = run_training(cfg)
    gaps = {task: result.metrics[f"val/{task}/best_auc"] - result.metrics[f"val/{task}/auc"] for task in ("ctr", "cvr")}
    print("AUC gap to best achievable:", gaps)
    assert all(0 <= gap < 0.015 for gap in gaps.values()), gaps
    # The exported metrics are those of the best evaluation in the history.
    best = max(result.history, key=lambda h: (h["val/ctr/auc"] + h["val/cvr/auc"]) / 2)
    assert result.metrics["best/step"] == best["step"]
    assert result.metrics["val/ctr/auc"] == best["val/ctr/auc"]
