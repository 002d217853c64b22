"""Does the distributed job learn what there is to learn? On generated logs with a planted
ground truth, the validation AUC of each task must come within 0.02 of the best achievable
AUC (the AUC of the true probabilities on the same rows)."""

from __future__ import annotations

from pipeline.train.config import load_config
from pipeline.train.launch import run_training


def test_validation_auc_within_002_of_best_achievable(ray_local, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = load_config("configs/jobs/train_quality.yaml", [f"data.root={tmp_path}/data", f"output_dir={tmp_path}/runs"])
    result = run_training(cfg)
    gaps = {task: result.metrics[f"val/{task}/best_auc"] - result.metrics[f"val/{task}/auc"] for task in ("ctr", "cvr")}
    print("AUC gap to best achievable:", gaps)
    assert all(0 <= gap < 0.02 for gap in gaps.values()), gaps
    # Every evaluation is in the history, the last one being the final metrics.
    assert result.history[-1]["val/ctr/auc"] == result.metrics["val/ctr/auc"]
