"""The distributed training job end to end on a local Ray cluster: 2 Ray Train workers,
sharded tables, checkpoints, an export that reproduces the reported metrics, and the run's
TensorBoard curves and MLflow run read back with their own readers."""

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
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants it for a file:// store
    cfg = small_job_config(
        tmp_path,
        "train.epochs=1",
        "train.checkpoint_every_steps=5",
        "train.eval_every_steps=4",  # the final evaluation then runs on the cached validation batches
        "tracking.scalars_every_steps=5",
        f"tracking.mlflow_uri=file://{tmp_path}/mlruns",
    )
    result = run_training(cfg)
    _check_tensorboard(Path(result.run_dir) / "tensorboard", result)
    _check_mlflow(f"file://{tmp_path}/mlruns", cfg.name, result)

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


def _check_tensorboard(log_dir: Path, result) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]
    tags = set(events.Tags()["scalars"])
    for task in ("ctr", "cvr"):
        # Every evaluation, the last one equal to the job's final metrics (float32 in the file).
        auc = scalars(f"val/{task}/auc")
        assert [s for s, _ in auc] == [h["step"] for h in result.history] == [4, 8, 12, 13]
        assert abs(auc[-1][1] - result.metrics[f"val/{task}/auc"]) < 1e-6
        assert [s for s, _ in scalars(f"train/loss/{task}")] == [5, 10]
    assert [s for s, _ in scalars("train/rows_per_s")] == [5, 10] and all(v > 0 for _, v in scalars("train/rows_per_s"))
    assert {"train/lr/sparse", "train/lr/dense"} <= tags
    # Expert utilisation: each task gate's weights over its experts sum to 1 at every evaluation.
    for level, task in ((0, "ctr"), (0, "cvr"), (1, "ctr")):
        experts = sorted(t for t in tags if t.startswith(f"experts/level{level}/{task}/expert"))
        assert len(experts) == 3, experts  # 2 of its own, 1 shared (configs/jobs/train_local.yaml)
        at_last = sum(scalars(t)[-1][1] for t in experts)
        assert abs(at_last - 1.0) < 1e-4, at_last
    assert any(t.startswith("experts/level0/shared/") for t in tags)


def _check_mlflow(uri: str, experiment: str, result) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.batch_size"] == str(BATCH_SIZE)
    for task in ("ctr", "cvr"):
        history = client.get_metric_history(run.info.run_id, f"val/{task}/auc")
        assert sorted(m.step for m in history) == [4, 8, 12, 13]
        assert run.data.metrics[f"final/val/{task}/auc"] == result.metrics[f"val/{task}/auc"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {
        "model/model.json",
        "model/dense.safetensors",
        "model/tables",
    }
