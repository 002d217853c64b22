"""Offline evaluation: an exported model's metrics on labelled Parquet logs, in this process.

One function serves `jobs.evaluate` (any exports, registry versions included, on any days) and
the retraining gate (pipeline/retrain/gate.py: candidate and production on the held-out day).
The files are streamed with pyarrow in their given order and a fixed batch size, no Ray: every
model evaluated on the same files sees exactly the same rows, each mapped with its own feature
spec (a candidate may have changed the spec; the labels are the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # {task}/auc|logloss|calibration|count|positives, /gauc with group_by
    rows: int  # rows evaluated (a task's count is its sample space's share of them)


@torch.no_grad()
def evaluate(export_dir: str, files: list[str], batch_size: int, max_rows: int | None = None) -> Evaluation:
    """The export at `export_dir` on the rows of `files` (the first `max_rows` of them, in file
    order, where given), in batches of `batch_size`. Bad rows raise DataValidationError naming
    the file and column, as in training."""
    return evaluate_days(export_dir, {"": files}, batch_size, max_rows)[0]


@torch.no_grad()
def evaluate_days(
    export_dir: str, files_by_day: Mapping[str, list[str]], batch_size: int, max_rows: int | None = None
) -> tuple[Evaluation, dict[str, Evaluation]]:
    """As `evaluate`, on every day's files in turn (`max_rows`: of each day): the metrics of all
    the rows read, and of each day's. With one day, the two are the same object."""
    from pipeline.data.reader import iter_file_batches
    from pipeline.train.export import load_export
    from pipeline.train.metrics import TaskMetrics

    model, spec, _ = load_export(export_dir)

    pooled, days, several = TaskMetrics.for_spec(spec), {}, len(files_by_day) > 1
    for day, files in files_by_day.items():
        metrics, rows = (TaskMetrics.for_spec(spec) if several else pooled), 0
        updated = (pooled, metrics) if several else (pooled,)
        for b in iter_file_batches(files, spec, batch_size, max_rows=max_rows):
            scores = model(b.sparse_features, b.dense_features)
            for m in updated:
                m.update(scores, b.labels, b.label_masks, b.groups)
            rows += len(b)
        days[day] = Evaluation(metrics.compute(), rows)
    if not several:
        return next(iter(days.values())), days
    return Evaluation(pooled.compute(), sum(e.rows for e in days.values())), days


MAX_SLICES = 100  # values of a slice column: a device, a country, a category; not an id


@torch.no_grad()
def evaluate_slices(
    export_dir: str, files: list[str], batch_size: int, column: str, max_rows: int | None = None
) -> tuple[Evaluation, dict[str, Evaluation]]:
    """As `evaluate`, and the metrics of the rows of each value of `column`, most rows first:
    any column of the files with one value per row, read beside the model's (a null is the
    value "null"). A missing or nested (list, struct) column raises DataValidationError naming
    the file, before any work; more than MAX_SLICES values, ScoringError."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.data.collate import collate
    from pipeline.data.reader import iter_record_batches
    from pipeline.data.validation import DataValidationError
    from pipeline.score.errors import ScoringError
    from pipeline.train.export import load_export
    from pipeline.train.metrics import TaskMetrics

    for f in files:  # before any work
        schema = pq.read_schema(f)
        if column not in schema.names:
            raise DataValidationError("missing slice column", file=f, column=column)
        if pa.types.is_nested(schema.field(column).type):
            raise DataValidationError(
                "a list or struct per row: a slice needs one value per row", file=f, column=column
            )
    model, spec, _ = load_export(export_dir)

    pooled = TaskMetrics.for_spec(spec)
    slices: dict[str, TaskMetrics] = {}  # value -> its rows' metrics
    rows: dict[str, int] = {}
    for path, record_batch in iter_record_batches(files, spec, batch_size, max_rows=max_rows, extra_columns=[column]):
        b = collate(record_batch, spec, source=path)
        scores = model(b.sparse_features, b.dense_features)
        pooled.update(scores, b.labels, b.label_masks, b.groups)
        values = pc.dictionary_encode(pc.fill_null(pc.cast(record_batch.column(column), pa.string()), "null"))
        indices = values.indices.to_numpy()
        for k, value in enumerate(values.dictionary.to_pylist()):
            if value not in slices:
                if len(slices) == MAX_SLICES:
                    raise ScoringError(
                        f"slice column '{column}': more than {MAX_SLICES} values; slice by a column of "
                        "fewer (a device, a country, a category)"
                    )
                slices[value], rows[value] = TaskMetrics.for_spec(spec), 0
            in_slice = torch.from_numpy(indices == k)
            slices[value].update(scores, b.labels, b.label_masks & in_slice[:, None], b.groups)
            rows[value] += int(in_slice.sum())
    by_rows = sorted(slices, key=lambda v: -rows[v])
    return Evaluation(pooled.compute(), sum(rows.values())), {
        v: Evaluation(slices[v].compute(), rows[v]) for v in by_rows
    }
