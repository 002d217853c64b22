"""Arrow batch -> Batch (KJT + dense + labels + masks). Pure function: no Ray, no files, so the
training reader, scoring and unit tests all share it (and so share the id mapping).

Vectorised throughout: list lengths come from Arrow offsets, values from `flatten()`, and all
per-feature arrays are concatenated once; there is no Python loop over rows.
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
from pipeline.data.id_mapping import int_ids_to_rows, strings_to_rows
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
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _sparse(table: pa.Table, f: SparseFeature, t: TableSpec, ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
    """(rows mapped into the table, lengths per example) for one sparse feature."""
    arr = _column(table, f.column)
    if arr.null_count:
        raise ctx.fail("null ids", f.column, np.asarray(arr.is_null()))
    if f.multi_valued:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        values = arr.flatten()  # respects slicing, unlike .values
        if values.null_count:
            rows = pc.list_parent_indices(arr).to_numpy()[np.asarray(values.is_null())]
            raise ctx.fail("null ids inside lists", f.column, np.unique(rows))
    else:
        lengths = np.ones(len(arr), dtype=np.int64)
        values = arr
    if f.type == "string":
        return strings_to_rows(values, t.num_embeddings), lengths
    ids = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    negative = ids < 0
    if negative.any():
        rows = np.repeat(np.arange(len(arr)), lengths)[negative] if f.multi_valued else np.flatnonzero(negative)
        raise ctx.fail("negative ids", f.column, np.unique(rows))
    return int_ids_to_rows(ids, t.num_embeddings, t.hash_all), lengths


def _dense(table: pa.Table, f: DenseFeature, ctx: _Context) -> np.ndarray:
    arr = _column(table, f.column)
    if arr.null_count:
        raise ctx.fail("null dense values", f.column, np.asarray(arr.is_null()))
    x = arr.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ctx.fail("NaN or infinite dense values", f.column, bad)
    if f.transform == "log1p":
        return np.log1p(np.maximum(x, 0.0))
    if f.transform == "standard":
        return (x - np.float32(f.mean)) / np.float32(f.std)
    return x


def _label(table: pa.Table, name: str, ctx: _Context) -> np.ndarray:
    arr = _column(table, name)
    if arr.null_count:
        raise ctx.fail("null labels", name, np.asarray(arr.is_null()))
    y = arr.to_numpy(zero_copy_only=False)
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise ctx.fail("label values other than 0/1", name, bad)
    return y.astype(np.float32, copy=False)


def collate(
    data: pa.Table | pa.RecordBatch, spec: FeatureSpec, source: str | None = None, with_labels: bool = True
) -> Batch:
    """Validate one Arrow batch and turn it into a Batch; raises DataValidationError.

    with_labels=False (scoring): label columns are neither required nor read; the Batch's
    labels are float32 [B, 0] and its masks bool [B, 0]."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    ctx = _Context(table, source)
    check_schema(table.schema, spec, source, labels=with_labels)
    n = table.num_rows
    tables = spec.table_by_name
    values, lengths = [], []
    for f in spec.sparse:
        v, lens = _sparse(table, f, tables[f.table], ctx)
        values.append(v)
        lengths.append(lens)
    kjt = KeyedJaggedTensor(
        keys=spec.feature_names,
        values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)),
        stride=n,
    )
    dense = np.empty((n, spec.num_dense), dtype=np.float32)
    for j, d in enumerate(spec.dense):
        dense[:, j] = _dense(table, d, ctx)
    if not with_labels:
        empty = torch.empty((n, 0), dtype=torch.float32)
        return Batch(
            sparse_features=kjt, dense_features=torch.from_numpy(dense), labels=empty, label_masks=empty.bool()
        )
    labels, masks = _labels_and_masks(table, spec, ctx)
    return Batch(
        sparse_features=kjt,
        dense_features=torch.from_numpy(dense),
        labels=torch.from_numpy(labels),
        label_masks=torch.from_numpy(masks),
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
