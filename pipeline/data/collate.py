"""Arrow batch -> Batch (KJT + dense + labels + masks). Pure function: no Ray, no files, so the
training reader, scoring and unit tests all share it (and so share the id mapping).

Vectorised throughout: list lengths come from Arrow offsets, values from `flatten()`, and all
per-feature arrays are concatenated once; there is no Python loop over rows. The numeric
encodings (`dense_columns`, `bucket_ids`) live here too, so training and scoring share them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from pipeline.data.batch import Batch
from pipeline.data.feature_spec import DenseFeature, FeatureSpec, SparseFeature, TableSpec
from pipeline.data.files import PATH_COLUMN
from pipeline.data.id_mapping import hash_utf8, int_ids_to_rows, managed_raw_ids, strings_to_rows
from pipeline.data.validation import DataValidationError, check_schema


class _Context:
    """Where a batch came from, to name files in errors (only computed when something fails)."""

    def __init__(self, table: pa.Table, source: str | None):
        self.table, self.source = table, source

    def fail(self, problem: str, column: str, bad_rows: np.ndarray) -> DataValidationError:
        count = int(np.count_nonzero(bad_rows)) if bad_rows.dtype == bool else int(len(bad_rows))
        where = self.source
        if PATH_COLUMN in self.table.column_names:
            rows = np.flatnonzero(bad_rows) if bad_rows.dtype == bool else bad_rows
            files = pc.unique(self.table.column(PATH_COLUMN).take(pa.array(rows))).to_pylist()
            where = ", ".join(files[:3]) + (f" (+{len(files) - 3} more files)" if len(files) > 3 else "")
        return DataValidationError(problem, file=where, column=column, count=count)


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    # Decimals (a warehouse's prices and amounts) are numbers to a dense feature or a label; id
    # columns never get here as decimals (validation wants integers or strings there).
    return pc.cast(arr, pa.float64()) if pa.types.is_decimal(arr.type) else arr


def _sparse(
    table: pa.Table, f: SparseFeature, t: TableSpec, null_row: int | None, ctx: _Context
) -> tuple[np.ndarray, np.ndarray, int]:
    """(rows mapped into the table, lengths per example, rows the missing policy filled)."""
    arr = _column(table, f.column)
    fill = f.missing == "default"
    if arr.null_count and not fill:
        raise ctx.fail("null ids (set missing: default to map them to a reserved row)", f.column, _nulls(arr))
    if f.multi_valued:
        return _sparse_lists(arr, f, t, null_row, ctx)
    rows = _ids_to_rows(_filled(arr), f, t)
    if arr.null_count:
        assert null_row is not None  # missing: default reserves the row
        rows = rows.copy()  # may be a read-only view of the Arrow buffer
        rows[_nulls(arr)] = null_row
    return rows, np.ones(len(arr), dtype=np.int64), arr.null_count


def _sparse_lists(
    arr: pa.Array, f: SparseFeature, t: TableSpec, null_row: int | None, ctx: _Context
) -> tuple[np.ndarray, np.ndarray, int]:
    values = arr.flatten()  # respects slicing, unlike .values; skips null lists
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if values.null_count and null_row is None:
        rows = pc.list_parent_indices(arr).to_numpy()[_nulls(values)]
        raise ctx.fail("null ids inside lists (set missing: default to map them)", f.column, np.unique(rows))
    rows = _ids_to_rows(_filled(values), f, t)
    filled = np.zeros(len(arr), dtype=bool)
    if values.null_count:
        rows = rows.copy()  # may be a read-only view of the Arrow buffer
        rows[_nulls(values)] = null_row
        filled[pc.list_parent_indices(arr).to_numpy()[_nulls(values)]] = True
    if null_row is not None:
        # Null and empty lists get one id, the reserved row: the pooled vector then says "missing"
        # rather than the zero vector, which the model cannot tell from a sum that cancels out.
        empty = lengths == 0
        if empty.any():
            starts = np.cumsum(lengths) - lengths
            rows = np.insert(rows, starts[empty], null_row)
            lengths = np.where(empty, 1, lengths)
            filled |= empty
    return rows, lengths, int(filled.sum())


def _ids_to_rows(values: pa.Array, f: SparseFeature, t: TableSpec) -> np.ndarray:
    """int64 rows (raw ids for a managed table, mapped to rows by the model); for int ids of a
    vocab table possibly a read-only view of the Arrow buffer."""
    if t.managed:
        return managed_raw_ids(values, f.value_type)
    if f.value_type == "string":
        return strings_to_rows(values, t.num_embeddings)
    ids = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return int_ids_to_rows(ids, t.num_embeddings, t.hash_all)


def _filled(arr: pa.Array) -> pa.Array:
    """`arr` with a placeholder id in its null slots, whose rows are then overwritten with the
    reserved one (numpy has no nulls: an int column with nulls would turn into floats)."""
    if not arr.null_count:
        return arr
    if pa.types.is_dictionary(arr.type):
        dictionary = arr.dictionary if len(arr.dictionary) else pa.array([""], arr.dictionary.type)
        return pa.DictionaryArray.from_arrays(pc.fill_null(arr.indices, 0), dictionary)
    is_string = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
    return pc.fill_null(arr, pa.scalar("" if is_string else 0, type=arr.type))


def _nulls(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_null())


def _dense(table: pa.Table, f: DenseFeature, ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
    """(the raw values as float32 with missing ones filled, where they were missing)."""
    arr = _column(table, f.column)
    x = arr.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)  # nulls become NaN
    missing = ~np.isfinite(x)
    if not missing.any():  # the common case: one pass, no copy
        return x, missing
    if np.isinf(x).any():
        raise ctx.fail("infinite dense values", f.column, np.isinf(x))
    if f.missing != "default":
        raise ctx.fail("null or NaN dense values (set missing: default to fill them)", f.column, missing)
    x = x.copy()  # may be a read-only view of the Arrow buffer
    x[missing] = f.fill_value
    return x, missing


def _standardised(x: np.ndarray, f: DenseFeature) -> np.ndarray:
    if f.mean is None or f.std is None:
        return x
    return (x - np.float32(f.mean)) / np.float32(f.std)


def dense_columns(x: np.ndarray, f: DenseFeature) -> np.ndarray:
    """The [n, f.width] dense input of one feature's (filled) values."""
    t = f.transform
    if t == "log1p":
        return np.log1p(np.maximum(x, 0.0))[:, None]
    if t in ("none", "standard"):
        return _standardised(x, f)[:, None]
    parts = []
    if t == "piecewise_linear":
        b = np.asarray(f.boundaries, dtype=np.float32)
        parts.append(np.clip((x[:, None] - b[:-1]) / (b[1:] - b[:-1]), 0.0, 1.0))
    if f.keep_raw:
        parts.append(_standardised(x, f)[:, None])
    return np.concatenate(parts, axis=1) if parts else np.empty((len(x), 0), np.float32)


def bucket_ids(x: np.ndarray, missing: np.ndarray, f: DenseFeature) -> np.ndarray:
    """Rows of the bucket table: 0 for missing values, else 1 + the index among the boundaries."""
    ids = np.searchsorted(np.asarray(f.boundaries, dtype=np.float32), x, side="right").astype(np.int64) + 1
    ids[missing] = 0
    return ids


def _group_ids(table: pa.Table, name: str, ctx: _Context) -> np.ndarray:
    """int64 ids of the GAUC groups: ints as they are, strings by their stable hash."""
    arr = _column(table, name)
    if arr.null_count:
        raise ctx.fail("null group ids", name, _nulls(arr))
    t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return hash_utf8(arr).view(np.int64)
    return arr.to_numpy(zero_copy_only=False).astype(np.int64)  # a copy: torch wants it writable


def _label(table: pa.Table, name: str, ctx: _Context) -> np.ndarray:
    arr = _column(table, name)
    if arr.null_count:
        raise ctx.fail("null labels", name, _nulls(arr))
    y = arr.to_numpy(zero_copy_only=False)
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise ctx.fail("label values other than 0/1", name, bad)
    return y.astype(np.float32, copy=False)


def collate(
    data: pa.Table | pa.RecordBatch, spec: FeatureSpec, source: str | None = None, with_labels: bool = True
) -> Batch:
    """Validate one Arrow batch and turn it into a Batch; raises DataValidationError.

    with_labels=False (scoring): label and group columns are neither required nor read; the
    Batch's labels are float32 [B, 0] and its masks bool [B, 0]. `Batch.missing` counts, per
    feature, the rows its missing-value policy filled."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    ctx = _Context(table, source)
    check_schema(table.schema, spec, source, labels=with_labels)
    n = table.num_rows
    tables = spec.table_by_name
    values, lengths, missing = [], [], {}
    for f in spec.sparse:
        v, lens, filled = _sparse(table, f, tables[f.table], spec.null_row(f.table), ctx)
        values.append(v)
        lengths.append(lens)
        if filled:
            missing[f.name] = filled
    dense = np.empty((n, spec.num_dense), dtype=np.float32)
    bucketed = {}
    j = 0
    for d in spec.dense:
        x, absent = _dense(table, d, ctx)
        if absent.any():
            missing[d.name] = int(absent.sum())
        dense[:, j : j + d.width] = dense_columns(x, d)
        j += d.width
        if d.embedded:
            bucketed[d.name] = bucket_ids(x, absent, d)
    for d in spec.bucketized:  # the KJT's keys: sparse features, then bucketized ones (spec order)
        values.append(bucketed[d.name])
        lengths.append(np.ones(n, dtype=np.int64))
    kjt = KeyedJaggedTensor(
        keys=spec.feature_names,
        values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)),
        stride=n,
    )
    if not with_labels:
        empty = torch.empty((n, 0), dtype=torch.float32)
        return Batch(
            sparse_features=kjt,
            dense_features=torch.from_numpy(dense),
            labels=empty,
            label_masks=empty.bool(),
            missing=missing,
        )
    labels, masks = _labels_and_masks(table, spec, ctx)
    groups = torch.from_numpy(_group_ids(table, spec.group_by, ctx)) if spec.group_by else None
    return Batch(
        sparse_features=kjt,
        dense_features=torch.from_numpy(dense),
        labels=torch.from_numpy(labels),
        label_masks=torch.from_numpy(masks),
        groups=groups,
        missing=missing,
    )


def _labels_and_masks(table: pa.Table, spec: FeatureSpec, ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
    n = table.num_rows
    label_values = {name: _label(table, name, ctx) for name in spec.labels}
    labels = np.empty((n, len(spec.tasks)), dtype=np.float32)
    masks = np.ones((n, len(spec.tasks)), dtype=bool)
    for j, task in enumerate(spec.tasks):
        labels[:, j] = label_values[task.label]
        if task.sample_space != "all":
            given = label_values[task.sample_space] == 1
            impossible = (labels[:, j] == 1) & ~given
            if impossible.any():
                raise ctx.fail(
                    f"'{task.label}' is 1 where '{task.sample_space}' is 0 (e.g. a conversion without a click)",
                    task.label,
                    impossible,
                )
            masks[:, j] = given
    return labels, masks
