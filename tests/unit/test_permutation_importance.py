"""Permutation importance (pipeline/score/importance.py, `jobs.evaluate --importance`): checked
against the same shuffles done the plain way, and on a column the rows hold constant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from helpers.scoring_data import input_files, random_export, write_logs
from jobs.evaluate import main as evaluate_main
from pipeline.data.collate import collate
from pipeline.data.reader import iter_record_batches
from pipeline.score.importance import permutation_importance
from pipeline.train.export import load_export

BATCH, MAX_ROWS = 1000, 4500  # the last batch is half a batch


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> str:
    return random_export(tmp_path_factory.mktemp("model") / "export", seed=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    """The test logs with `price` set to one value on every row."""
    root = write_logs(tmp_path_factory.mktemp("logs"))
    for f in input_files(root):
        table = pq.read_table(f)
        i = table.schema.get_field_index("price")
        pq.write_table(table.set_column(i, "price", pc.cast(pa.repeat(3.5, len(table)), table.schema.field(i).type)), f)
    return [str(f) for f in input_files(root)]


def _auc_with_shuffled(export: str, files: list[str], column: str | None) -> dict[str, float]:
    """Each task's AUC over the first MAX_ROWS rows, `column` shuffled within each batch by the
    documented permutations (one per batch from default_rng(0)), torchmetrics' AUC over the same
    1,000 thresholds."""
    model, spec, _ = load_export(export)
    rng, probs, labels, masks = np.random.default_rng(0), [], [], []
    with torch.no_grad():
        for path, rb in iter_record_batches(files, spec, BATCH, max_rows=MAX_ROWS):
            order = pa.array(rng.permutation(rb.num_rows))
            if column is not None:
                i = rb.schema.get_field_index(column)
                rb = rb.set_column(i, column, rb.column(i).take(order))
            b = collate(rb, spec, source=path)
            probs.append(torch.sigmoid(model(b.sparse_features, b.dense_features)))
            labels.append(b.labels)
            masks.append(b.label_masks)
    p, y, m = torch.cat(probs), torch.cat(labels), torch.cat(masks)
    return {
        t: binary_auroc(p[m[:, i], i], y[m[:, i], i].long(), thresholds=1000).item()
        for i, t in enumerate(spec.task_names)
    }


def test_drops_equal_plain_shuffles_and_a_constant_column_loses_nothing(export, files):
    got = permutation_importance(export, files, BATCH, max_rows=MAX_ROWS)
    spec = load_export(export)[1]
    assert got.rows == MAX_ROWS and sorted(got.drops) == sorted(spec.input_columns())
    as_is = _auc_with_shuffled(export, files, None)
    assert got.auc == pytest.approx(as_is, abs=1e-5)
    for column in ("user_id", "history"):  # an id, a list of ids
        shuffled = _auc_with_shuffled(export, files, column)
        for task, drop in got.drops[column].items():
            assert drop == pytest.approx(as_is[task] - shuffled[task], abs=1e-5), (column, task)
    # A random model's scores crowd a few of the 1,000 bins, so one drop may be 0; not all of them.
    assert any(d != 0 for column in ("user_id", "history") for d in got.drops[column].values())
    assert got.drops["price"] == dict.fromkeys(spec.task_names, 0.0)


def test_the_job_prints_the_columns_largest_drop_first_and_writes_them(export, files, tmp_path, capsys):
    out = tmp_path / "e.json"
    root = str(Path(files[0]).parents[1])
    [result] = evaluate_main(
        ["--model", export, "--input", root, "--max-rows", str(MAX_ROWS), "--batch-size", str(BATCH)]
        + ["--importance", "--json", str(out)]
    )["models"]
    drops = result["importance"]
    lines = capsys.readouterr().out.splitlines()
    start = lines.index(f"  importance: AUC lost with the column shuffled in batches of {BATCH:,} rows") + 1
    printed = [line.strip().split(":")[0] for line in lines[start : start + len(drops)]]
    assert sorted(printed) == sorted(drops)
    totals = [sum(drops[c].values()) for c in printed]
    assert totals == sorted(totals, reverse=True)
    ctr, cvr = drops[printed[0]]["ctr"], drops[printed[0]]["cvr"]
    assert lines[start] == f"    {printed[0]}: ctr {ctr:+.4f}, cvr {cvr:+.4f}"
    assert json.loads(out.read_text())["models"][0]["importance"] == drops
