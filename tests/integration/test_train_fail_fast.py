"""Bad data ends a training run at once: a NaN met mid-epoch stops the run after one start of
the worker group, with max_failures=2 that a worker fault would use (tests/integration/
test_train_recovery.py keeps a killed worker retried)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.small_job import small_job_config
from pipeline.data.files import list_day_files
from pipeline.data.validation import DataValidationError
from pipeline.train.launch import ensure_data, run_training


def _put_nan(path: str, column: str, rows: list[int]) -> None:
    table = pq.read_table(path)
    values = table[column].to_numpy().astype(np.float64)
    values[rows] = np.nan
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, column, pa.array(values, type=table.schema.field(column).type)), path)


def test_nan_mid_epoch_starts_the_worker_group_once(ray_local, tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    cfg = small_job_config(tmp_path, "train.epochs=1", "cluster.max_failures=2", "train.checkpoint_every_steps=4")
    ensure_data(cfg)
    bad = list_day_files(cfg.data.root, *cfg.data.train_days)[-1]  # the last file read: mid-epoch
    rows = pq.ParquetFile(bad).metadata.num_rows
    _put_nan(bad, "price", [rows - 3])
    starts = Path(cfg.output_dir) / "worker_starts.txt"

    def counting_loop(loop_config: dict) -> None:
        # Defined here, so Ray pickles it by value: each worker of each start appends its rank.
        import ray.train

        from pipeline.train.worker import train_loop_per_worker

        with open(starts, "a") as f:
            f.write(f"{ray.train.get_context().get_world_rank()}\n")
        train_loop_per_worker(loop_config)

    starts.parent.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataValidationError) as err:
        run_training(cfg, train_loop=counting_loop)
    # The worker's own error, not Ray Train's wrapper: it names the file, the column and the rows.
    assert (err.value.file, err.value.column, err.value.count) == (bad, "price", 1)
    assert sorted(starts.read_text().split()) == ["0", "1"]  # one start of the 2-worker group
