"""Offline evaluation: an exported model's metrics on labelled Parquet logs, in this process.

One function serves `jobs.evaluate` (any exports, registry versions included, on any days) and
the retraining gate (pipeline/retrain/gate.py: candidate and production on the held-out day).
The files are streamed with pyarrow in their given order and a fixed batch size, no Ray: every
model evaluated on the same files sees exactly the same rows, each mapped with its own feature
spec (a candidate may have changed the spec; the labels are the same).
"""

from __future__ import annotations

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
    from pipeline.data.reader import iter_file_batches
    from pipeline.train.export import load_export
    from pipeline.train.metrics import TaskMetrics

    model, spec, _ = load_export(export_dir)
    metrics, rows = TaskMetrics(spec.task_names, gauc=spec.group_by is not None), 0
    for b in iter_file_batches(files, spec, batch_size, max_rows=max_rows):
        metrics.update(model(b.sparse_features, b.dense_features), b.labels, b.label_masks, b.groups)
        rows += len(b)
    return Evaluation(metrics.compute(), rows)
