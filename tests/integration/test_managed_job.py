"""Managed-collision tables through the training job (2 Ray Train workers, TorchRec's train
pipeline with the remapping pipelined in front of the sharded tables) on logs whose users and
items change daily: the export maps ids as training did (its metrics on the validation day equal
the workers'), the run reports how many ids its tables admitted and evicted, and a warm start
on a later day admits that day's new ids into the mapping it loaded."""

from __future__ import annotations

from helpers.export_metrics import export_metrics
from helpers.managed_spec import small_managed_spec
from helpers.small_job import small_job_config
from pipeline.data.files import list_day_files
from pipeline.train.id_turnover import turnover_from_metrics
from pipeline.train.launch import run_training

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
USER_ROWS = 512  # fewer than one day's 1,000 users: the table fills and evicts


def test_managed_tables_train_export_and_warm_start_on_drifting_ids(ray_local, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    common = [
        f"data.spec={small_managed_spec(tmp_path, USER_ROWS)}",
        f"data.generate.days={len(DAYS)}",
        "data.generate.rows=33000",
        "data.generate.id_drift=0.3",
        "train.epochs=1",
        "train.eval_every_steps=4",  # the final evaluation reuses the cached validation batches
    ]
    first = run_training(
        small_job_config(
            tmp_path,
            *common,
            "name=day2",
            f"data.train_days=[{DAYS[0]},{DAYS[1]}]",
            f"data.val_days=[{DAYS[2]},{DAYS[2]}]",
        )
    )
    turnover = turnover_from_metrics(first.metrics)
    user, item = turnover["user"], turnover["item"]
    # Counted against the run's start, an empty mapping: what holds a row now was admitted.
    assert user["rows"] == USER_ROWS - 1 and user["admitted"] == user["live"] == USER_ROWS - 1  # full
    assert item["admitted"] == item["live"] > 0 and user["evicted"] == item["evicted"] == 0

    val = list_day_files(str(tmp_path / "data"), DAYS[2], DAYS[2])
    local, _ = export_metrics(first.export_dir, val)
    for task in ("ctr", "cvr"):
        assert abs(local[f"{task}/auc"] - first.metrics[f"val/{task}/auc"]) < 1e-3
        assert abs(local[f"{task}/logloss"] - first.metrics[f"val/{task}/logloss"]) < 1e-4

    warm = run_training(
        small_job_config(
            tmp_path,
            *common,
            "name=day4",
            f"data.train_days=[{DAYS[3]},{DAYS[3]}]",
            f"data.val_days=[{DAYS[4]},{DAYS[4]}]",
            f"train.init_from={first.checkpoint_dir}",
        )
    )
    later = turnover_from_metrics(warm.metrics)
    # Day 4's catalogue has 60% ids that day 2's mapping never saw: they are admitted, and as
    # many old ids evicted from the full user table; counted against the warm start's mapping.
    assert later["user"]["admitted"] > 0 and later["user"]["evicted"] == later["user"]["admitted"]
    assert later["item"]["admitted"] > 0
