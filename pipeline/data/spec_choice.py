"""What one column becomes in an inferred spec (pipeline/data/inspect.py): a sparse feature and
its table, a numeric feature and its encoding, or left out, each with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.data.column_stats import SPARSE_TYPE, ColumnAccumulator, ColumnStats, about, nulls_text, num_text

# A number with at most this many distinct values gets one bucket per value, whatever --buckets
# says (like a histogram tree's 255 bins): ages, counts, zero-inflated amounts.
PER_VALUE_BUCKETS_MAX = 256
# A collision-free hash table is looked for up to this many rows per distinct value, for at most
# this many values: n values fit m rows without a collision with probability ~exp(-n^2 / 2m), so
# beyond a few hundred values no table of 64 n rows is likely to be free of them.
COLLISION_FREE_MAX_FACTOR = 64
COLLISION_FREE_MAX_VALUES = 512
KEY_SHARE = 0.9  # distinct >= 90% of the values: a row key (impression id), not a feature
KEY_MIN_VALUES = 1000
# Width of a bucket embedding. On UCI Adult (benchmarks/bench_adult.py, 3 seeds) 4 did as well as 8
# on income and 0.0001-0.0002 better on never-married; 16 was worse on both.
BUCKET_DIM = 4
NUMERIC_ENCODINGS = ("bucketize", "piecewise_linear", "standard")


@dataclass
class Choice:
    """What became of one column: role is sparse, dense, label or left out; `why` is the YAML comment."""

    column: str
    role: str
    why: str
    table: dict[str, Any] | None = None
    feature: dict[str, Any] | None = None


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def embedding_dim(distinct: int) -> int:
    """4..64, a multiple of 4, growing with the fourth root of the cardinality."""
    return int(min(64, max(4, 4 * round(6 * max(distinct, 1) ** 0.25 / 4))))


def table_size(s: ColumnStats, values: set | None) -> tuple[dict[str, int], str]:
    """Rows of a feature's table. Ints dense in [0, n): `vocab_size`, every id its own row.
    Otherwise hashed: where every distinct value was seen (`values`), the smallest size from
    2 x distinct up in which they all land on different rows; two categories sharing a row
    cost real accuracy (on UCI Adult, 0.02 AUC). Else a power of two >= 2 x distinct."""
    d = max(s.distinct, 1)
    if s.kind in ("int", "list<int>") and s.min is not None and s.max is not None:
        lo, hi = int(s.min), int(s.max)
        if lo >= 0 and hi + 1 <= 2 * d:
            return {"vocab_size": hi + 1}, f"ids dense in [0, {hi + 1:,})"
    start = max(16, 2 * d)
    if values and len(values) <= COLLISION_FREE_MAX_VALUES:
        size = collision_free_size(values, "string" in s.kind, start)
        if size is not None:
            return {
                "hash_buckets": size
            }, f"hashed: the smallest size >= {start:,} where the {d:,} values never collide"
    buckets = max(16, _next_pow2(2 * d))
    return {"hash_buckets": buckets}, f"hashed: a power of two >= 2 x {d:,} distinct (at least 16)"


def collision_free_size(values: set, strings: bool, start: int) -> int | None:
    """The smallest table size >= start (up to COLLISION_FREE_MAX_FACTOR x len(values)) in which
    the collate's hash (pipeline/data/id_mapping.py) gives every value a row of its own."""
    from pipeline.data.id_mapping import hash_int64, hash_utf8

    h = hash_utf8(pa.array(sorted(values), pa.string())) if strings else hash_int64(np.array(sorted(values)))
    for size in range(start, COLLISION_FREE_MAX_FACTOR * len(values) + 1):
        if np.unique(h % np.uint64(size)).size == len(values):
            return size
    return None


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _float32_short(x: float) -> float:
    """The shortest decimal of x's float32 (the collate compares in float32)."""
    v = np.float32(x)
    short = float(str(v))
    return short if np.float32(short) == v else float(v)


def _boundaries(acc: ColumnAccumulator, ranks: Sequence[float]) -> list[float]:
    q = np.asarray(acc.quantiles(ranks), dtype=np.float64)
    return _sorted_float32(q)


def _sorted_float32(q: np.ndarray) -> list[float]:
    q = q[np.isfinite(q)]
    uniq = np.unique(q.astype(np.float32))  # sorted, strictly increasing in float32
    return [_float32_short(float(b)) for b in uniq]


def _exact_values(acc: ColumnAccumulator, at_most: int) -> np.ndarray | None:
    """The column's distinct values, sorted, when they were all kept and are at most `at_most`."""
    if acc.small is None or len(acc.small) > at_most:
        return None
    return np.sort(np.asarray([float(v) for v in acc.small], dtype=np.float64))


def choose_feature(
    s: ColumnStats,
    acc: ColumnAccumulator,
    as_numeric: bool,
    as_categorical: bool,
    encoding: str,
    buckets: int,
    rows: int,
) -> Choice:
    c = s.name
    missing = {"missing": "default"} if s.missing else {}
    rng = f"range {num_text(s.min)}..{num_text(s.max)}" if s.min is not None else ""
    facts = ", ".join(p for p in (s.type, about(s), nulls_text(s), rng) if p)
    if s.distinct == 1 and not s.missing:
        return Choice(c, "left out", f"constant ({s.type}, one value in {s.rows:,} rows)")
    numeric = as_numeric or s.kind in ("float", "bool")
    if numeric:
        assert s.mean is not None and s.std is not None
        if s.distinct < 2 or s.std == 0:
            return Choice(c, "left out", f"constant apart from missing values ({facts})")
        stats = {"mean": _round(s.mean), "std": _round(s.std)}
        facts = f"{facts}, mean {s.mean:.4g}, std {s.std:.4g}"
        feature: dict[str, Any] = {"name": c, "column": c}
        how = encoding
        if s.kind == "bool":
            how, note = "standard", "bool"
        elif s.distinct < 3:
            how, note = "standard", "fewer than 3 distinct values"
        else:
            note = ""
        # Few distinct values (ages, counts, zero-inflated amounts such as capital gains): one
        # bucket per value, split half-way between them as a tree would. Quantiles would merge a
        # column that is 0 for 90 % of the rows into a handful of buckets.
        exact = _exact_values(acc, max(buckets, PER_VALUE_BUCKETS_MAX))
        if how == "bucketize" and exact is not None:
            b = _sorted_float32((exact[1:] + exact[:-1]) / 2)
            feature.update(transform="bucketize", **stats, boundaries=b, dim=BUCKET_DIM, keep_raw=True)
            note = f"{len(b) + 1} buckets, one per distinct value"
        elif how == "bucketize":
            b = _boundaries(acc, [i / buckets for i in range(1, buckets)])
            feature.update(transform="bucketize", **stats, boundaries=b, dim=BUCKET_DIM, keep_raw=True)
            note = f"{len(b) + 1} quantile buckets" + (f" of {buckets}, ties merged" if len(b) + 1 < buckets else "")
        elif how == "piecewise_linear":
            b = (
                _sorted_float32(exact)
                if exact is not None
                else _boundaries(acc, [i / buckets for i in range(buckets + 1)])
            )
            if len(b) >= 2:
                feature.update(transform="piecewise_linear", **stats, boundaries=b, keep_raw=True)
                note = f"{len(b) - 1} quantile bins"
            else:
                how, note = "standard", "too few distinct quantiles for bins"
        if how == "standard":
            feature.update(transform="standard", **stats)
        feature.update(missing)
        why = f"{facts}; {how}" + (f" ({note})" if note else "")
        return Choice(c, "dense", why, feature=feature)

    if (
        not as_categorical
        and s.kind in ("int", "string")
        and s.values >= KEY_MIN_VALUES
        and s.distinct >= KEY_SHARE * s.values
    ):
        return Choice(c, "left out", f"a key ({about(s)} in {s.values:,} values; --categorical {c} keeps it)")
    multi = s.kind.startswith("list<")
    if multi:
        facts = f"{facts}, mean length {s.mean_length or 0:.3g}"
    size, size_why = table_size(s, acc.small)
    table = {"name": c, **size, "dim": embedding_dim(s.distinct), "pooling": "mean" if multi else "sum"}
    feature = {"name": c, "column": c, "table": c, "type": SPARSE_TYPE[s.kind], **missing}
    return Choice(c, "sparse", f"{facts}; {size_why}", table=table, feature=feature)
