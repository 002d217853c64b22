"""Would hashing the ids that hold no row into rows of their own lower the managed collision rate?

    python benchmarks/bench_unseen_ids.py               # bench_collisions.py's logs, ~20 s on 2 cores
    python benchmarks/bench_unseen_ids.py --drift 0.3

A managed table sends every id without a row (not admitted yet, or new on the evaluation day) to
its last row, so bench_collisions.py's managed collision rate is, almost entirely, the share of
the evaluation day's impressions whose id no training day had. A common remedy is a hashed
fallback: keep R of the table's rows out of the mapping and hash those ids into them. At the same
table memory that costs the mapping R rows. This replays bench_collisions.py's id stream (its
generator and defaults, the training days in file order, 1,024 ids a step, the spec's LRU every
100 steps) through the managed table (ple_model/managed_ids.py, one process: the same mapping as
2 workers that gather their ids) with R = 0 (what the project does), 1/16, 1/8 and 1/4 of the rows,
and prints per table and R the share of the evaluation day's impressions whose row holds another of
its ids, the same among ids the training days had, and the ratio to hashing the same rows (as
bench_collisions.py counts it: another id of the training days or the evaluation day lands in the
row; target <= 0.2). No model is trained: the mapping depends on the ids alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_collisions import TABLES, write_days  # noqa: E402

from pipeline.data.id_mapping import int_ids_to_rows, managed_raw_ids  # noqa: E402
from pipeline.data.synthetic import SyntheticConfig  # noqa: E402
from ple_model.managed_ids import ManagedIds, ManagedTable  # noqa: E402

STEP_IDS = 1024  # 2 workers x 512 rows, one id of each table per row


def shared_rows(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per impression: does its row hold another distinct id of these impressions?"""
    distinct, first = np.unique(ids, return_index=True)
    ids_per_row = np.bincount(rows[first], minlength=int(rows.max()) + 1)
    return ids_per_row[rows] > 1


def replay(train: np.ndarray, evaluate: np.ndarray, rows: int, fallback: int, interval: int) -> np.ndarray:
    """Rows of the evaluation day's raw ids, after profiling the training ids in steps; ids
    without a row hashed into the last `fallback` + 1 rows (the mapping keeps the others)."""
    mapped = rows - fallback
    config = EmbeddingBagConfig(num_embeddings=mapped, embedding_dim=1, name="t", feature_names=["f"])
    module = ManagedIds([config], {"t": ManagedTable("lru", interval)})
    as_kjt = lambda ids: KeyedJaggedTensor.from_lengths_sync(["f"], torch.from_numpy(ids), torch.ones(len(ids)).int())
    for start in range(0, len(train), STEP_IDS):
        module(as_kjt(train[start : start + STEP_IDS]))
    module.eval()
    out = module(as_kjt(evaluate)).values().numpy().copy()
    unmapped = out == mapped - 1  # the mapping's last row: ids that hold none
    out[unmapped] = mapped - 1 + evaluate[unmapped] % (fallback + 1)  # raw ids are hashes already
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=6)
    p.add_argument("--rows-per-day", type=int, default=150_000)
    p.add_argument("--users", type=int, default=4000)
    p.add_argument("--drift", type=float, default=0.1)
    p.add_argument("--interval", type=int, default=100)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-unseen-")
    config = SyntheticConfig(num_users=args.users, num_items=args.users // 4, id_drift=args.drift)
    days = write_days(f"{work}/data", args.days, args.rows_per_day, config)
    table_rows = {"user": config.num_users, "item": config.num_items}  # bench_collisions' default rows
    for table, feature in TABLES.items():
        by_day = [
            pa.concat_arrays(pq.read_table(f"{work}/data/dt={d}", columns=[feature]).column(0).chunks) for d in days
        ]
        raw = [managed_raw_ids(ids, "int64") for ids in by_day]
        train, evaluate = np.concatenate(raw[:-1]), raw[-1]
        known = np.isin(evaluate, train)
        rows = table_rows[table]
        day, live = by_day[-1].to_numpy(), np.unique(np.concatenate([d.to_numpy() for d in by_day]))
        ids_per_row = np.bincount(int_ids_to_rows(live, rows, hash_all=True), minlength=rows)
        hashing = float((ids_per_row[int_ids_to_rows(day, rows, hash_all=True)] > 1).mean())
        print(
            f"{table}: {rows:,} rows; {1 - known.mean():.3f} of the evaluation day's impressions are of new ids; "
            f"hashing: {hashing:.3f} share a row"
        )
        for fallback in (0, rows // 16, rows // 8, rows // 4):
            shared = shared_rows(replay(train, evaluate, rows, fallback, args.interval), evaluate)
            print(
                f"  fallback rows {fallback:5,d}: share of impressions sharing a row {shared.mean():.3f}, "
                f"among ids the training days had {shared[known].mean():.3f}; / hashing {shared.mean() / hashing:.3f}"
            )


if __name__ == "__main__":
    main()
