"""Permutation importance: what each input column is worth to a trained model, on labelled logs.

For every input column of the export's feature spec, the same rows are scored again with that
column's values shuffled across the rows of each batch (one permutation per batch, the same for
every column, from a seeded generator), which keeps the column's distribution and breaks its tie
to the labels and to the other columns. A column's importance for a task is the task's AUC on
the rows as they are minus its AUC with the column shuffled: about 0 for a column the model
does not use, negative only by chance. A column that several features read (an id embedded
twice, say) is shuffled for all of them at once. One pass over the files: each batch is read
and decoded once, then collated and scored once per column, in this process (no Ray).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch


@dataclass(frozen=True)
class Importance:
    auc: dict[str, float]  # task -> AUC on the rows as they are
    drops: dict[str, dict[str, float]]  # column -> task -> AUC as they are minus AUC with it shuffled
    rows: int


@torch.no_grad()
def permutation_importance(
    export_dir: str, files: list[str], batch_size: int, max_rows: int | None = None, seed: int = 0
) -> Importance:
    """Importance of every input column of the export at `export_dir` on the rows of `files` (the
    first `max_rows`, in file order, where given), shuffled within batches of `batch_size` rows.
    Costs one evaluation per input column, plus one: `max_rows` keeps it short."""
    from pipeline.data.collate import collate
    from pipeline.data.reader import iter_record_batches
    from pipeline.train.export import load_export
    from pipeline.train.metrics import TaskMetrics

    model, spec, _ = load_export(export_dir)
    columns = spec.input_columns()
    tasks = spec.task_names
    # AUC only: the GAUC's group column (user_id, say) may be one of the shuffled inputs.
    as_is = TaskMetrics(tasks)
    shuffled = {c: TaskMetrics(tasks) for c in columns}
    rng, rows = np.random.default_rng(seed), 0

    def score(record_batch: pa.RecordBatch, path: str, metrics: TaskMetrics) -> None:
        b = collate(record_batch, spec, source=path)
        metrics.update(model(b.sparse_features, b.dense_features), b.labels, b.label_masks)

    for path, record_batch in iter_record_batches(files, spec, batch_size, max_rows=max_rows):
        score(record_batch, path, as_is)
        order = pa.array(rng.permutation(record_batch.num_rows))
        for c in columns:
            i = record_batch.schema.get_field_index(c)
            score(record_batch.set_column(i, c, record_batch.column(i).take(order)), path, shuffled[c])
        rows += record_batch.num_rows

    def aucs(metrics: TaskMetrics) -> dict[str, float]:
        computed = metrics.compute()
        return {t: computed[f"{t}/auc"] for t in tasks}

    auc = aucs(as_is)
    drops = {c: {t: auc[t] - a for t, a in aucs(m).items()} for c, m in shuffled.items()}
    return Importance(auc, drops, rows)
