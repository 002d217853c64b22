"""Validation metrics of an export computed in this one process, to compare with what the
training workers reported for the same weights."""

from __future__ import annotations

import torch

from pipeline.data.reader import iter_file_batches
from pipeline.train.export import load_export
from pipeline.train.metrics import TaskMetrics


def export_metrics(export_dir: str, files: list[str]) -> tuple[dict[str, float], dict]:
    """({task}/auc, ... and GAUC where the spec has groups, over `files`; the export's meta)."""
    model, spec, meta = load_export(export_dir)
    metrics = TaskMetrics(spec.task_names, gauc=spec.group_by is not None)
    with torch.no_grad():
        for b in iter_file_batches(files, spec, 4096):
            metrics.update(model(b.sparse_features, b.dense_features), b.labels, b.label_masks, b.groups)
    return metrics.compute(), meta
