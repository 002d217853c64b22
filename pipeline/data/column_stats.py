"""Flat-memory statistics of one Parquet column over a stream of Arrow arrays, for spec
inference (pipeline/data/inspect.py): counters, an Apache DataSketches HLL sketch for the
distinct count (exact up to EXACT_DISTINCT values), min/max, float64 streaming mean/variance
(Chan et al.'s pairwise update), a KLL sketch for quantiles, list lengths; and how they read in
the spec's comments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.common.logs import plural

HLL_LG_K = 14  # 2^14 registers: ~0.8% relative error, 16 KiB per column
KLL_K = 400  # ~0.8% normalised rank error
# Up to this many distinct values are kept exactly: their count, collision-free table sizes for
# hashed ids, and exact bucket boundaries for numbers with few values (a tree's split points).
EXACT_DISTINCT = 4096


# -- column kinds ---------------------------------------------------------------------------------
def _is_str(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def column_kind(t: pa.DataType) -> str | None:
    """int, float, bool, string, list<int>, list<string>; None for types a spec cannot read."""
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):  # decimals: read as float64 (data/collate.py)
        return "float"
    if _is_str(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = column_kind(t.value_type)
        if inner in ("int", "string"):
            return f"list<{inner}>"
    return None


def type_text(t: pa.DataType) -> str:
    """An Arrow type as the comments show it: float32 rather than 'float', list<int64>."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{type_text(t.value_type)}>"
    if pa.types.is_dictionary(t):
        return f"dictionary<{type_text(t.value_type)}>"
    return {"halffloat": "float16", "float": "float32", "double": "float64"}.get(str(t), str(t))


SPARSE_TYPE = {"int": "int64", "string": "string", "list<int>": "list<int64>", "list<string>": "list<string>"}


# -- per-column statistics ------------------------------------------------------------------------
@dataclass
class ColumnStats:
    """What one pass saw of a column. `distinct` is exact when `distinct_exact`, else an HLL
    estimate; for lists the counts are of the ids inside the lists."""

    name: str
    type: str  # the Arrow type, as text
    kind: str  # column_kind
    rows: int = 0
    nulls: int = 0  # null rows; floats: null or NaN; lists: null or empty lists
    null_elements: int = 0  # lists: null ids inside lists
    values: int = 0  # non-missing values (lists: ids)
    distinct: int = 0
    distinct_exact: bool = True
    min: float | None = None
    max: float | None = None
    mean: float | None = None  # numbers only (ints, floats, bools)
    std: float | None = None  # population std
    mean_length: float | None = None  # lists only

    @property
    def missing(self) -> bool:
        return self.nulls > 0 or self.null_elements > 0

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


def _signed(values: pa.Array) -> pa.Array:
    """uint64 ids as the int64 bits the collate reads them as."""
    return pc.cast(values, pa.int64(), safe=False) if pa.types.is_uint64(values.type) else values


def _unique_values(values: pa.Array) -> pa.Array:
    """The distinct non-null values of a batch (dictionary arrays: of the values used)."""
    if pa.types.is_dictionary(values.type):
        return pc.unique(values.dictionary.take(pc.unique(values.indices)))
    return pc.unique(values)


class ColumnAccumulator:
    """Flat-memory statistics of one column over a stream of Arrow arrays."""

    def __init__(self, name: str, t: pa.DataType, kind: str, kll_k: int = KLL_K):
        self.stats = ColumnStats(name, type_text(t), kind)
        self.hll = datasketches.hll_sketch(HLL_LG_K)
        self.small: set[Any] | None = set()  # exact distinct values until there are too many
        self.kll = datasketches.kll_doubles_sketch(kll_k) if kind in ("int", "float", "bool") else None
        self._n, self._mean, self._m2 = 0, 0.0, 0.0
        self._lengths, self._lists = 0, 0
        self.inf = 0  # infinite floats in the current file

    def update(self, arr: pa.Array) -> None:
        s = self.stats
        s.rows += len(arr)
        if s.kind.startswith("list<"):
            self._update_list(arr)
            return
        s.nulls += arr.null_count
        values = arr.drop_null() if arr.null_count else arr
        if s.kind == "float":
            x = as_float(values)
            finite = np.isfinite(x)
            if not finite.all():
                nan = int(np.isnan(x).sum())
                s.nulls += nan
                self.inf += len(x) - int(finite.sum()) - nan
                x = x[finite]
                values = pa.array(x)
            self._add_numbers(x)
        elif s.kind in ("int", "bool"):
            values = _signed(values)
            self._add_numbers(pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
        self._add_values(values, with_range=s.kind == "int")

    def _update_list(self, arr: pa.Array) -> None:
        s = self.stats
        lengths = pc.list_value_length(arr)
        n_lists = len(arr) - arr.null_count
        total = int(pc.sum(lengths).as_py() or 0)
        empty = int(pc.sum(pc.equal(lengths, 0)).as_py() or 0)
        s.nulls += arr.null_count + empty
        self._lists += n_lists
        self._lengths += total
        flat = pc.list_flatten(arr)
        s.null_elements += flat.null_count
        values = _signed(flat.drop_null() if flat.null_count else flat)
        self._add_values(values, with_range=s.kind == "list<int>")

    def _add_values(self, values: pa.Array, with_range: bool) -> None:
        """Count the non-missing values (ids of lists), their range (ints), their distinct ones."""
        self.stats.values += len(values)
        if with_range and len(values):
            self._add_range(values)
        self._add_distinct(_unique_values(values))

    def _add_range(self, values: pa.Array) -> None:
        s = self.stats
        mm = pc.min_max(values)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        s.min = lo if s.min is None else min(s.min, lo)
        s.max = hi if s.max is None else max(s.max, hi)

    def _add_numbers(self, x: np.ndarray) -> None:
        if not len(x):
            return
        x = np.ascontiguousarray(x, dtype=np.float64)
        if not x.flags.writeable:  # Arrow's zero-copy views are read-only, which the sketch's binding refuses
            x = x.copy()
        assert self.kll is not None
        self.kll.update(x)
        s = self.stats
        lo, hi = float(x.min()), float(x.max())
        if s.kind != "int":  # ints keep their exact int range (_add_range)
            s.min = lo if s.min is None else min(s.min, lo)
            s.max = hi if s.max is None else max(s.max, hi)
        # Chan et al.: merge the batch's mean and sum of squared deviations into the running ones.
        n_b, mean_b = len(x), float(x.mean())
        m2_b = float(np.square(x - mean_b).sum())
        n = self._n + n_b
        delta = mean_b - self._mean
        self._mean += delta * n_b / n
        self._m2 += m2_b + delta * delta * self._n * n_b / n
        self._n = n

    def _add_distinct(self, uniq: pa.Array) -> None:
        py = uniq.to_pylist()
        if self.stats.kind == "bool":
            py = [int(v) for v in py]
        if self.small is not None:
            self.small.update(py)
            if len(self.small) > EXACT_DISTINCT:
                self.small = None
        for v in py:
            self.hll.update(v)

    def finish(self) -> ColumnStats:
        s = self.stats
        if self.small is not None:
            s.distinct, s.distinct_exact = len(self.small), True
        else:
            # An estimate, which can exceed the values it counts ("302,636 distinct in 300,000").
            s.distinct = min(max(round(self.hll.get_estimate()), EXACT_DISTINCT + 1), s.values)
            s.distinct_exact = False
        if self._n:
            s.mean = self._mean
            s.std = math.sqrt(max(self._m2, 0.0) / self._n)
        if self._lists:
            s.mean_length = self._lengths / self._lists
        return s

    def quantiles(self, ranks: Sequence[float]) -> list[float]:
        assert self.kll is not None and not self.kll.is_empty()
        return list(self.kll.get_quantiles(list(ranks)))


@dataclass
class LabelCounts:
    name: str
    rows: int = 0
    positives: int = 0
    bad_in_file: int = 0


def as_float(arr: pa.Array) -> np.ndarray:
    """float64 values, nulls as NaN (ints, floats, bools, decimals)."""
    if pa.types.is_boolean(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type):
        arr = pc.cast(arr, pa.float64(), safe=False)  # large ids lose precision: fine for a comparison
    return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


# -- how statistics read in a comment ------------------------------------------------------------
def about(s: ColumnStats) -> str:
    return f"{s.distinct:,} distinct" if s.distinct_exact else f"about {s.distinct:,} distinct"


def num_text(x: float | None) -> str:
    if x is None:
        return "?"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.4g}"


def rows_text(n: int) -> str:
    return plural(n, "row")


def nulls_text(s: ColumnStats) -> str:
    parts = []
    if s.nulls:
        what = "null or empty" if s.kind.startswith("list<") else ("null or NaN" if s.kind == "float" else "null")
        parts.append(f"{100 * s.null_rate:.2g}% {what} ({rows_text(s.nulls)})")
    if s.null_elements:
        parts.append(f"{s.null_elements:,} null ids inside lists")
    return ", ".join(parts) if parts else "no nulls"


def label_comment(name: str, lab: LabelCounts) -> str:
    rate = lab.positives / lab.rows if lab.rows else 0.0
    note = " (constant: nothing to learn)" if lab.positives in (0, lab.rows) else ""
    return f"positive rate {rate:.4g} ({lab.positives:,} of {lab.rows:,} rows){note}"
