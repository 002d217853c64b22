"""The distributed training job end to end on a local Ray cluster: 2 Ray Train workers,
sharded tables, checkpoints, and an export that reproduces the reported metrics."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.export_metrics import export_metrics
from helpers.small_job import BATCH_SIZE, ROWS, small_job_config
from pipeline.data.files import list_day_files
from pipeline.train.checkpoint import EXTRA_FILE
from pipeline.train.launch import run_training


def test_training_job_end_to_end(ray_local, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = small_job_config(
        tmp_path,
        "train.epochs=1",
        "train.checkpoint_every_steps=5",
        "train.eval_every_steps=4",  # the final evaluation then runs on the cached validation batches
    )
    result = run_training(cfg)

    extra = json.loads(Path(result.checkpoint_dir, EXTRA_FILE).read_text())
    # 2 train days of 20k rows over 3 days, 2 workers x 512 rows per step, last partial batch dropped
    assert extra["world_size"] == 2 and extra["step"] == (2 * ROWS // 3) // (2 * BATCH_SIZE) == 13
    assert result.metrics["done"] == 1
    assert [h["step"] for h in result.history] == [4, 8, 12, 13]
    # Throughput over the epoch, and in steady state (the epoch's first step, which waits for
    # Ray Data to start reading, apart).
    m = result.metrics
    assert m["train/rows_per_s"] > 0 and m["train/rows_per_s_steady"] > 0 and m["train/epoch_start_s"] > 0
    assert m["train/rows"] / m["train/rows_per_s"] > m["train/epoch_start_s"]

    # The export holds the trained weights: scoring the validation day with it in one plain
    # process gives the metrics the 2 sharded workers reported.
    local, meta = export_metrics(result.export_dir, list_day_files(cfg.data.root, *cfg.data.val_days))
    assert meta["step"] == extra["step"]
    for task in ("ctr", "cvr"):
        assert local[f"{task}/count"] == result.metrics[f"val/{task}/count"]
        assert abs(local[f"{task}/auc"] - result.metrics[f"val/{task}/auc"]) < 1e-3
        assert abs(local[f"{task}/logloss"] - result.metrics[f"val/{task}/logloss"]) < 1e-4
    assert result.metrics["val/cvr/auc"] > 0.55  # it learned something in 13 steps
