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

    def new_metrics() -> TaskMetrics:
        return TaskMetrics(spec.task_names, gauc=spec.group_by is not None)

    pooled, days, several = new_metrics(), {}, len(files_by_day) > 1
    for day, files in files_by_day.items():
        metrics, rows = (new_metrics() if several else pooled), 0
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
