"""Propose a feature spec from the Parquet data itself (`python -m jobs.inspect`).

One streaming pass over the day files (pyarrow record batches, one file open at a time), so
memory stays flat as the data grows: per column a few counters, an Apache DataSketches HLL
sketch for the distinct count (exact up to EXACT_DISTINCT values), min/max, float64 streaming
mean/variance (Chan et al.'s pairwise update) and a KLL sketch for quantiles; per list column
its mean length; per label its positive rate.

Before any row is read every file's footer is checked: a column whose type differs between
files, or that some files lack, and a missing label fail with a DataValidationError naming the
files. The pass then refuses labels that are not 0/1, columns that are null everywhere and
columns equal to a label in every row (a leak), each naming file and column.

Each column becomes (see `_choose`):
- int / string: a sparse feature with a table of its own, `vocab_size = max + 1` when the ids
  are dense in [0, n) (min >= 0, max + 1 <= 2 x distinct), else `hash_buckets` (the power of
  two >= 2 x distinct, at least 16); dim 4..64 from the cardinality.
- list<int> / list<string>: the same, multi-valued, pooling mean.
- float, and ints named in `numeric`: a dense feature, `bucketize` on quantile boundaries with
  keep_raw (or `piecewise_linear` / `standard`); fewer than 3 distinct values: `standard`.
  bool: `standard`.
- left out, with the reason in a comment: keys (distinct >= 90% of the values, 1000 values or
  more), constants, types the spec cannot express.
Any null (NaN for floats, null or empty lists and null ids inside lists) sets `missing: default`.

The YAML is written by hand (comments above each choice say what drove it) and checked to load
back to the same values and to validate as a FeatureSpec before it is returned.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasketches
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
from pipeline.data.files import list_day_files
from pipeline.data.validation import DataValidationError

BATCH_ROWS = 65536
HLL_LG_K = 14  # 2^14 registers: ~0.8% relative error, 16 KiB per column
KLL_K = 400  # ~0.8% normalised rank error
# Up to this many distinct values are kept exactly: their count, collision-free table sizes for
# hashed ids, and exact bucket boundaries for numbers with few values (a tree's split points).
EXACT_DISTINCT = 4096
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
    if pa.types.is_floating(t):
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


_SPARSE_TYPE = {"int": "int64", "string": "string", "list<int>": "list<int64>", "list<string>": "list<string>"}


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


def _unique_values(values: pa.Array) -> pa.Array:
    """The distinct non-null values of a batch (dictionary arrays: of the values used)."""
    if pa.types.is_dictionary(values.type):
        return pc.unique(values.dictionary.take(pc.unique(values.indices)))
    return pc.unique(values)


class _Accumulator:
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
            x = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            finite = np.isfinite(x)
            if not finite.all():
                nan = int(np.isnan(x).sum())
                s.nulls += nan
                self.inf += len(x) - int(finite.sum()) - nan
                x = x[finite]
                values = pa.array(x)
            self._add_numbers(x)
        elif s.kind in ("int", "bool"):
            if pa.types.is_uint64(values.type):
                values = pc.cast(values, pa.int64(), safe=False)
            self._add_numbers(pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
        s.values += len(values)
        if s.kind == "int" and len(values):
            self._add_range(values)
        self._add_distinct(_unique_values(values))

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
        values = flat.drop_null() if flat.null_count else flat
        if pa.types.is_uint64(values.type):
            values = pc.cast(values, pa.int64(), safe=False)
        s.values += len(values)
        if s.kind == "list<int>" and len(values):
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
            s.distinct = max(round(self.hll.get_estimate()), EXACT_DISTINCT + 1)
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
class _Label:
    name: str
    rows: int = 0
    positives: int = 0
    bad_in_file: int = 0


def _as_float(arr: pa.Array) -> np.ndarray:
    """float64 values, nulls as NaN (ints, floats, bools)."""
    if pa.types.is_boolean(arr.type) or pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.float64(), safe=False)  # large ids lose precision: fine for a comparison
    return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


# -- results --------------------------------------------------------------------------------------
@dataclass
class Choice:
    """What became of one column: role is sparse, dense, label or left out; `why` is the YAML comment."""

    column: str
    role: str
    why: str
    table: dict[str, Any] | None = None
    feature: dict[str, Any] | None = None


@dataclass
class InspectResult:
    text: str  # the YAML spec, comments included
    spec: FeatureSpec
    files: list[str]
    rows: int
    stats: dict[str, ColumnStats]  # every column read, labels included
    choices: list[Choice]  # one per column of the files, in schema order
    label_rates: dict[str, float]
    left_out: dict[str, str] = field(default_factory=dict)  # column -> reason

    def choice(self, column: str) -> Choice:
        return next(c for c in self.choices if c.column == column)


def parse_task(text: str) -> dict[str, str]:
    """NAME=LABEL[@SAMPLE_SPACE] -> a task mapping (sample space `all` by default)."""
    m = re.fullmatch(r"([^=@\s]+)=([^=@\s]+)(?:@([^=@\s]+))?", text.strip())
    if not m:
        raise ValueError(f"--task {text!r}: expected NAME=LABEL or NAME=LABEL@SAMPLE_SPACE")
    return {"name": m.group(1), "label": m.group(2), "sample_space": m.group(3) or "all"}


def parse_days(text: str) -> tuple[str, str]:
    """START..END (inclusive) or a single day."""
    start, sep, end = text.partition("..")
    return (start, end) if sep else (start, start)


# -- the pass -------------------------------------------------------------------------------------
def _read_schema(path: str) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataValidationError(f"not a readable Parquet file ({e})", file=path) from None


def _check_schemas(files: list[str], labels: Sequence[str], exclude: set[str]) -> dict[str, pa.DataType]:
    """column -> type, the same in every file (footers only)."""
    first: dict[str, pa.DataType] = {}
    for i, path in enumerate(files):
        schema = _read_schema(path)
        for label in labels:
            if schema.get_field_index(label) < 0:
                raise DataValidationError("missing label column", file=path, column=label)
        names = [n for n in schema.names if n not in exclude]
        if i == 0:
            first = {n: schema.field(n).type for n in names}
            continue
        for n in names:
            t = schema.field(n).type
            if n not in first:
                raise DataValidationError(
                    f"not in {files[0]} (every file must have the same columns; or --exclude {n})", file=path, column=n
                )
            if t != first[n]:
                raise DataValidationError(
                    f"type {type_text(t)} here but {type_text(first[n])} in {files[0]} "
                    f"(mixed types across files; or --exclude {n})",
                    file=path,
                    column=n,
                )
        for n in first:
            if schema.get_field_index(n) < 0:
                raise DataValidationError(
                    f"missing here but present in {files[0]} (every file must have the same columns; or --exclude {n})",
                    file=path,
                    column=n,
                )
    return first


def inspect_days(root: str, start_day: str, end_day: str, labels: Sequence[str], **options: Any) -> InspectResult:
    """inspect_files over ROOT/dt=DAY/*.parquet for the days in [start_day, end_day]."""
    files = list_day_files(root, start_day, end_day)
    options.setdefault("source", f"{root}, days {start_day}..{end_day}")
    return inspect_files(files, labels, **options)


def inspect_files(
    files: Sequence[str],
    labels: Sequence[str],
    *,
    tasks: Sequence[dict[str, str] | str] | None = None,
    exclude: Sequence[str] = (),
    group_by: str | None = None,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    numeric_encoding: str = "bucketize",
    buckets: int = 32,
    name: str = "inspected",
    source: str | None = None,
    command: str | None = None,
    batch_rows: int = BATCH_ROWS,
) -> InspectResult:
    """One pass over `files`; returns the proposed spec (text and model) and what drove it."""
    files = list(files)
    labels = list(labels)
    if not files:
        raise DataValidationError("no Parquet files to inspect")
    if not labels:
        raise ValueError("name at least one label column")
    if numeric_encoding not in NUMERIC_ENCODINGS:
        raise ValueError(f"numeric encoding must be one of {NUMERIC_ENCODINGS}, got {numeric_encoding!r}")
    if buckets < 2:
        raise ValueError(f"buckets must be at least 2, got {buckets}")
    both = set(numeric) & set(categorical)
    if both:
        raise ValueError(f"columns named both numeric and categorical: {sorted(both)}")
    task_list = [parse_task(t) if isinstance(t, str) else dict(t) for t in tasks] if tasks else None
    if not task_list:
        task_list = [{"name": label, "label": label, "sample_space": "all"} for label in labels]
    for task in task_list:  # before the pass: FeatureSpec would say the same, but only after it
        if task.get("label") not in labels or task.get("sample_space", "all") not in ("all", *labels):
            raise ValueError(f"task {task}: its label and sample space must be among the labels {labels} (or 'all')")
    if group_by is not None and group_by in labels:
        raise ValueError(f"group_by '{group_by}' is a label")
    excluded = set(exclude)
    for label in labels:
        if label in excluded or label in numeric or label in categorical:
            raise ValueError(f"label '{label}' cannot be excluded or named as a feature")

    types = _check_schemas(files, labels, excluded - {group_by} if group_by else excluded)
    all_names = set(_read_schema(files[0]).names)
    for option, cols in (("--exclude", exclude), ("--numeric", numeric), ("--categorical", categorical)):
        for c in cols:
            if c not in (all_names if option == "--exclude" else types):
                raise DataValidationError(f"{option} names a column the files do not have", file=files[0], column=c)
    if group_by is not None and group_by not in types:
        raise DataValidationError("--group-by names a column the files do not have", file=files[0], column=group_by)

    kinds = {c: column_kind(t) for c, t in types.items()}
    for label in labels:
        if kinds[label] not in ("int", "float", "bool"):
            raise DataValidationError(
                f"a label must be 0/1 numbers, got type {type_text(types[label])}", file=files[0], column=label
            )
    for c in numeric:
        if kinds[c] not in ("int", "float", "bool"):
            raise DataValidationError(
                f"--numeric: type {type_text(types[c])} cannot be numeric", file=files[0], column=c
            )
    for c in categorical:
        if kinds[c] not in ("int", "string", "list<int>", "list<string>"):
            raise DataValidationError(
                f"--categorical: type {type_text(types[c])} cannot be an id (ints and strings can)",
                file=files[0],
                column=c,
            )
    if group_by is not None and kinds[group_by] not in ("int", "string"):
        raise DataValidationError(
            f"group_by must be int or string, got type {type_text(types[group_by])}", file=files[0], column=group_by
        )

    label_set = set(labels)
    read = [c for c, k in kinds.items() if k is not None]
    accs = {c: _Accumulator(c, types[c], kinds[c] or "") for c in read if c not in label_set}
    label_accs = {label: _Label(label) for label in labels}
    # (column, label) pairs equal in every row so far: number columns only.
    same = {(c, label) for c in accs if kinds[c] in ("int", "float", "bool") for label in labels}
    as_dictionary = [c for c in read if kinds[c] == "string"]

    rows = 0
    for path in files:
        pf = pq.ParquetFile(path, read_dictionary=as_dictionary)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=read):
            rows += batch.num_rows
            ys = {}
            for label, lab in label_accs.items():
                y = _as_float(batch.column(label))
                ys[label] = y
                lab.rows += len(y)
                lab.positives += int((y == 1).sum())
                lab.bad_in_file += int(((y != 0) & (y != 1)).sum())  # NaN (null) counts as bad
            for c, acc in accs.items():
                acc.update(batch.column(c))
            for c in {c for c, _ in same}:
                x = _as_float(batch.column(c))
                for label in labels:
                    if (c, label) in same and not np.array_equal(x, ys[label]):
                        same.discard((c, label))
        for lab in label_accs.values():
            if lab.bad_in_file:
                raise DataValidationError(
                    "label values other than 0/1 (labels must be 0/1 ints, bools or floats, without nulls)",
                    file=path,
                    column=lab.name,
                    count=lab.bad_in_file,
                )
        for c, acc in accs.items():
            if acc.inf:
                raise DataValidationError(
                    f"infinite values (the collate rejects them; or --exclude {c})", file=path, column=c, count=acc.inf
                )
    if rows == 0:
        raise DataValidationError(f"no rows in {plural(len(files), 'file')}", file=files[0])

    stats = {c: acc.finish() for c, acc in accs.items()}
    for c, s in stats.items():
        if s.values == 0:
            raise DataValidationError(
                f"{'null or empty' if s.kind.startswith('list<') else 'null'} in every one of the {s.rows} rows "
                f"of {source or plural(len(files), 'file')}: "
                f"leave it out with --exclude {c}",
                file=files[0],
                column=c,
                count=s.rows,
            )
    for c, label in sorted(same):
        if stats[c].distinct >= 2:
            raise DataValidationError(
                f"equal to label '{label}' in every row: a leak, the model would read the answer "
                f"(leave it out with --exclude {c})",
                file=files[0],
                column=c,
            )
    if group_by is not None and group_by in stats and stats[group_by].nulls:
        raise DataValidationError(
            "null group ids (group_by must be set on every row)",
            file=files[0],
            column=group_by,
            count=stats[group_by].nulls,
        )

    label_rates = {label: lab.positives / lab.rows for label, lab in label_accs.items()}
    choices: list[Choice] = []
    for c in _read_schema(files[0]).names:
        t = types.get(c)
        if c in label_set:
            choices.append(Choice(c, "label", _label_comment(c, label_accs[c])))
        elif c in excluded or t is None:  # (t is None: excluded, never read)
            choices.append(Choice(c, "left out", "--exclude"))
        elif kinds[c] is None:
            choices.append(Choice(c, "left out", f"type {type_text(t)} is not one a spec can read"))
        else:
            choices.append(_choose(stats[c], accs[c], c in numeric, c in categorical, numeric_encoding, buckets, rows))
    if not any(ch.role == "sparse" for ch in choices):
        raise DataValidationError(
            "no categorical column to embed: a spec needs at least one sparse feature (see --categorical)",
            file=files[0],
        )

    data: dict[str, Any] = {
        "name": name,
        "tables": [ch.table for ch in choices if ch.table is not None],
        "sparse": [ch.feature for ch in choices if ch.role == "sparse"],
        "dense": [ch.feature for ch in choices if ch.role == "dense"],
        "labels": labels,
        "tasks": task_list,
    }
    if group_by is not None:
        data["group_by"] = group_by
    header = [
        f"Feature spec proposed by `{command or 'python -m jobs.inspect'}` (pipeline/data/inspect.py):",
        "review it before training.",
        f"Data: {source or 'files'}: {plural(len(files), 'file')}, {_rows(rows)}.",
        f"Distinct counts are HyperLogLog estimates ('about'; exact up to {EXACT_DISTINCT}). Bucket boundaries:",
        f"midpoints between the distinct values (up to {PER_VALUE_BUCKETS_MAX}), else quantiles of a KLL sketch.",
    ]
    text = render_spec(data, choices, header)
    loaded = yaml.safe_load(text)
    if loaded != data:  # a quoting or number-format slip in render_spec: never write such a file
        raise AssertionError(f"rendered spec does not load back to its values:\n{text}")
    spec = spec_from_dict(loaded, source="the inspected spec")
    return InspectResult(
        text=text,
        spec=spec,
        files=files,
        rows=rows,
        stats={**stats},
        choices=choices,
        label_rates=label_rates,
        left_out={ch.column: ch.why for ch in choices if ch.role == "left out"},
    )


# -- choices --------------------------------------------------------------------------------------
def _about(s: ColumnStats) -> str:
    return f"{s.distinct:,} distinct" if s.distinct_exact else f"about {s.distinct:,} distinct"


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.4g}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _rows(n: int) -> str:
    return plural(n, "row")


def _nulls(s: ColumnStats) -> str:
    parts = []
    if s.nulls:
        what = "null or empty" if s.kind.startswith("list<") else ("null or NaN" if s.kind == "float" else "null")
        parts.append(f"{100 * s.null_rate:.2g}% {what} ({_rows(s.nulls)})")
    if s.null_elements:
        parts.append(f"{s.null_elements:,} null ids inside lists")
    return ", ".join(parts) if parts else "no nulls"


def _label_comment(name: str, lab: _Label) -> str:
    rate = lab.positives / lab.rows if lab.rows else 0.0
    note = " (constant: nothing to learn)" if lab.positives in (0, lab.rows) else ""
    return f"positive rate {rate:.4g} ({lab.positives:,} of {lab.rows:,} rows){note}"


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


def _boundaries(acc: _Accumulator, ranks: Sequence[float]) -> list[float]:
    q = np.asarray(acc.quantiles(ranks), dtype=np.float64)
    return _sorted_float32(q)


def _sorted_float32(q: np.ndarray) -> list[float]:
    q = q[np.isfinite(q)]
    uniq = np.unique(q.astype(np.float32))  # sorted, strictly increasing in float32
    return [_float32_short(float(b)) for b in uniq]


def _exact_values(acc: _Accumulator, at_most: int) -> np.ndarray | None:
    """The column's distinct values, sorted, when they were all kept and are at most `at_most`."""
    if acc.small is None or len(acc.small) > at_most:
        return None
    return np.sort(np.asarray([float(v) for v in acc.small], dtype=np.float64))


def _choose(
    s: ColumnStats,
    acc: _Accumulator,
    as_numeric: bool,
    as_categorical: bool,
    encoding: str,
    buckets: int,
    rows: int,
) -> Choice:
    c = s.name
    missing = {"missing": "default"} if s.missing else {}
    rng = f"range {_num(s.min)}..{_num(s.max)}" if s.min is not None else ""
    facts = ", ".join(p for p in (s.type, _about(s), _nulls(s), rng) if p)
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
        return Choice(c, "left out", f"a key ({_about(s)} in {s.values:,} values; --categorical {c} keeps it)")
    multi = s.kind.startswith("list<")
    if multi:
        facts = f"{facts}, mean length {s.mean_length or 0:.3g}"
    size, size_why = table_size(s, acc.small)
    table = {"name": c, **size, "dim": embedding_dim(s.distinct), "pooling": "mean" if multi else "sum"}
    feature = {"name": c, "column": c, "table": c, "type": _SPARSE_TYPE[s.kind], **missing}
    return Choice(c, "sparse", f"{facts}; {size_why}", table=table, feature=feature)


# -- YAML text ------------------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.<>/\-]*")


def yaml_str(s: str) -> str:
    """A plain scalar where YAML reads it back as this string, else a double-quoted one."""
    if _PLAIN.fullmatch(s):
        try:
            if yaml.safe_load(f"[{s}]") == [s]:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s, ensure_ascii=False)


def yaml_float(x: float) -> str:
    """repr, with a '.0' where PyYAML (YAML 1.1) would read '1e-05' as a string."""
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x}")
    r = repr(float(x))
    if "e" in r and "." not in r:
        mantissa, exp = r.split("e")
        r = f"{mantissa}.0e{exp}"
    return r


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return yaml_float(v)
    if isinstance(v, str):
        return yaml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r}")


def _flow(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{yaml_str(k)}: {_scalar(v)}" for k, v in d.items()) + "}"


def _comment(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", text)


def render_spec(data: dict[str, Any], choices: list[Choice], header: list[str]) -> str:
    """The spec as YAML: one flow mapping per table, feature and task, a comment above each
    feature with what drove its choice, left-out columns listed with their reasons."""
    out = [f"# {_comment(line)}" for line in header]
    left = [ch for ch in choices if ch.role == "left out"]
    if left:
        out.append("# Left out:")
        out += [f"#   {_comment(ch.column)}: {_comment(ch.why)}" for ch in left]
    out.append(f"name: {_scalar(data['name'])}")
    why = {ch.column: ch.why for ch in choices}
    out.append("tables:")
    for ch in choices:
        if ch.table is not None:
            out.append(f"  - {_flow(ch.table)}")
    out.append("sparse:")
    for f in data["sparse"]:
        out.append(f"  # {_comment(f['column'])}: {_comment(why[f['column']])}")
        out.append(f"  - {_flow(f)}")
    if data["dense"]:
        out.append("dense:")
        for f in data["dense"]:
            out.append(f"  # {_comment(f['column'])}: {_comment(why[f['column']])}")
            out.append(f"  - {_flow(f)}")
    else:
        out.append("dense: []")
    for label in data["labels"]:
        out.append(f"# {_comment(label)}: {_comment(why.get(label, ''))}")
    out.append(f"labels: {_scalar(data['labels'])}")
    out.append("tasks:")
    out += [f"  - {_flow(t)}" for t in data["tasks"]]
    if "group_by" in data:
        out.append(f"group_by: {_scalar(data['group_by'])}")
    return "\n".join(out) + "\n"
