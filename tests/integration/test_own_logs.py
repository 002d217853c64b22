"""A user's own logs end to end: signed 64-bit ids, string lists, nulls under `missing:
default`, bucketized and piecewise-linear numerics and GAUC, through the distributed training
job (2 workers, sharded tables) and the scoring job, with every filled value counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.export_metrics import export_metrics
from helpers.scoring_data import score_config
from pipeline.data.files import list_day_files
from pipeline.data.synthetic import generate_table
from pipeline.score.run import score
from pipeline.train.config import load_config
from pipeline.train.export import load_export
from pipeline.train.launch import run_training

DAYS, ROWS = ["2026-01-01", "2026-01-02", "2026-01-03"], 3000
SPEC = {
    "name": "own_logs",
    "group_by": "user_id",
    "tables": [
        {"name": "user", "hash_buckets": 512, "dim": 8},
        {"name": "item", "vocab_size": 20000, "dim": 8, "pooling": "mean"},
        {"name": "category", "hash_buckets": 64, "dim": 4},
        {"name": "tag", "hash_buckets": 64, "dim": 4, "pooling": "mean"},
    ],
    "sparse": [
        {"name": "user_id", "column": "user_id", "table": "user"},
        {"name": "item_id", "column": "item_id", "table": "item"},
        {"name": "history", "column": "history", "table": "item", "type": "list<int64>", "missing": "default"},
        {"name": "category", "column": "category", "table": "category", "type": "string", "missing": "default"},
        {"name": "tags", "column": "tags", "table": "tag", "type": "list<string>", "missing": "default"},
    ],
    "dense": [
        {"name": "price", "column": "price", "transform": "bucketize", "boundaries": [1.0, 5.0, 20.0, 100.0],
         "dim": 4, "keep_raw": True, "mean": 30.0, "std": 40.0, "missing": "default"},
        {"name": "hour", "column": "hour", "transform": "piecewise_linear", "boundaries": [0.0, 6.0, 12.0, 18.0, 24.0]},
    ],
    "labels": ["click", "conversion"],
    "tasks": [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "sample_space": "click"}],
}  # fmt: skip
FILLED = ("history", "category", "tags", "price")


def own_logs(seed: int) -> pa.Table:
    """Synthetic rows made to look like production logs."""
    t = generate_table(ROWS, seed=seed)
    n = t.num_rows
    # 64-bit hashed user ids: negative half the time, the extremes included.
    users = (t["user_id"].to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)
    users[:2] = [-(2**63), 2**63 - 1]
    history = t["history"].to_pylist()
    for i in range(0, n, 5):
        history[i] = [] if i % 10 else None
    category = t["category"].to_pylist()
    tags = [[c, d] for c, d in zip(category, t["device"].to_pylist(), strict=True)]
    for i in range(3, n, 11):
        category[i] = None
        tags[i] = [None] if i % 2 else []
    price = t["price"].to_numpy().copy()
    price[::7] = np.nan
    return pa.table(
        {
            "user_id": users,
            "item_id": t["item_id"],
            "history": pa.array(history, pa.list_(pa.int64())),
            "category": pa.array(category, pa.string()),
            "tags": pa.array(tags, pa.list_(pa.string())),
            "price": price,
            "hour": t["hour"],
            "click": t["click"],
            "conversion": t["conversion"],
        }
    )


def filled_rows(table: pa.Table) -> dict[str, int]:
    """Rows each policy fills, counted here with pyarrow alone."""
    history = table["history"]
    tags = table["tags"]
    tags_bad = pc.or_(pc.fill_null(pc.equal(pc.list_value_length(tags), 0), True), _has_null_value(tags))
    return {
        "history": int(pc.sum(pc.fill_null(pc.equal(pc.list_value_length(history), 0), True)).as_py()),
        "category": table["category"].null_count,
        "tags": int(pc.sum(tags_bad).as_py()),
        "price": int(np.isnan(table["price"].to_numpy()).sum()),
    }


def _has_null_value(lists: pa.ChunkedArray) -> pa.Array:
    arr = lists.combine_chunks()
    bad = np.zeros(len(arr), dtype=bool)
    bad[pc.list_parent_indices(arr).to_numpy()[np.asarray(arr.flatten().is_null())]] = True
    return pa.array(bad)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> tuple[Path, Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("own")
    totals = dict.fromkeys(FILLED, 0)
    for d, day in enumerate(DAYS):
        table = own_logs(seed=50 + d)
        (root / "data" / f"dt={day}").mkdir(parents=True)
        pq.write_table(table, root / "data" / f"dt={day}" / "part-00000.parquet")
        for k, v in filled_rows(table).items():
            totals[k] += v
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return root, spec_path, totals


@pytest.fixture(scope="module")
def trained(ray_local, logs, repo_root):
    root, spec_path, _ = logs
    cfg = load_config(
        repo_root / "configs" / "jobs" / "train_local.yaml",
        [
            f"data.root={root}/data",
            f"data.spec={spec_path}",
            f"output_dir={root}/runs",
            "train.epochs=1",
            "train.batch_size=256",
            "train.checkpoint_every_steps=null",
            "cluster.max_failures=0",
            # Dynamic Weight Average on 2 workers: a collective every window, weights from pooled losses.
            "train.loss_balancing=dwa",
            "train.dwa_window=5",
        ],
    )
    return cfg, run_training(cfg)


def test_training_counts_every_filled_value_and_reports_gauc(trained, logs):
    cfg, result = trained
    m = result.metrics
    _, _, totals = logs
    steps, rows_per_step = m["step"], 2 * cfg.train.batch_size
    trained_rows = steps * rows_per_step
    train_rows = 2 * ROWS  # two training days; drop_last leaves out less than a step per worker
    assert train_rows - rows_per_step < trained_rows <= train_rows
    for name in FILLED:
        # Rows filled in the batches trained on: at most those of the training days (the third
        # day holds validation), about their share of the rows.
        count = m[f"missing/{name}"]
        assert 0 < count <= totals[name]
        assert count == pytest.approx(totals[name] * trained_rows / (3 * ROWS), rel=0.25)
    for task in ("ctr", "cvr"):
        assert 0.0 < m[f"val/{task}/gauc"] < 1.0 and m[f"val/{task}/gauc_groups"] > 10
    weights = [m["train/loss_weight/ctr"], m["train/loss_weight/cvr"]]
    assert weights != [1.0, 1.0] and sum(weights) == pytest.approx(2.0)  # T x softmax: they sum to T


def test_two_workers_gauc_equals_one_process_on_the_export(trained):
    cfg, result = trained
    _, spec, _ = load_export(result.export_dir)
    assert spec.group_by == "user_id" and spec.feature_names[-1] == "price"
    local, _ = export_metrics(result.export_dir, list_day_files(cfg.data.root, *cfg.data.val_days))
    for task in spec.task_names:
        assert local[f"{task}/gauc_groups"] == result.metrics[f"val/{task}/gauc_groups"]
        assert local[f"{task}/gauc"] == pytest.approx(result.metrics[f"val/{task}/gauc"], abs=2e-4)


def test_scoring_fills_and_counts_the_same_way(trained, logs, tmp_path):
    _, result = trained
    root, _, totals = logs
    cfg = score_config(key_columns=["user_id", "item_id"])
    summary = score(result.export_dir, str(root / "data"), str(tmp_path / "scores"), cfg)
    assert summary.rows_scored == 3 * ROWS
    assert summary.missing_filled == totals  # every row scored exactly once: exact counts
    scores = pq.read_table(next((tmp_path / "scores").rglob("part-*.parquet")))
    p = scores["p_ctr"].to_numpy()
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
