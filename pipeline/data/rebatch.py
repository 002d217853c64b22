"""Cut a stream of Arrow tables (Ray Data blocks) into tables of exactly `batch_size` rows.

Ray Data's own `iter_batches(batch_size=...)` does this too, but on the 2-core machines it
cost as much as the collate itself (benchmarks/bench_reader.py: from a materialised dataset,
Ray batching + collate ran at ~8.4M rows/s, whole blocks sliced here + collate at ~13.6M):
slices of a block are zero-copy, and only the batch that straddles two blocks is assembled
from two pieces (still without copying; the collate reads chunked columns).

The optional local shuffle permutes at least `shuffle_rows` rows at a time (whole blocks,
so a file of any size is mixed internally), seeded so that an epoch is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa


def rebatched(
    tables: Iterable[pa.Table],
    batch_size: int,
    *,
    drop_last: bool = False,
    shuffle_rows: int = 0,
    seed: int | None = None,
) -> Iterator[pa.Table]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = np.random.default_rng(seed) if shuffle_rows else None
    window = max(batch_size, shuffle_rows)
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in tables:
        if not table.num_rows:
            continue
        pending.append(table)
        pending_rows += table.num_rows
        if pending_rows < window:
            continue
        rest = yield from _full_batches(_merged(pending, rng), batch_size)
        pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending:
        rest = yield from _full_batches(_merged(pending, rng), batch_size)
        if rest.num_rows and not drop_last:
            yield rest


def _merged(tables: list[pa.Table], rng: np.random.Generator | None) -> pa.Table:
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table.take(rng.permutation(table.num_rows)) if rng is not None else table


def _full_batches(table: pa.Table, batch_size: int):
    """Yields every full batch of `table`; returns the rows left over."""
    start = 0
    while table.num_rows - start >= batch_size:
        yield table.slice(start, batch_size)
        start += batch_size
    return table.slice(start)
