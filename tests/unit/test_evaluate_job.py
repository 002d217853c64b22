"""jobs.evaluate: exported models' metrics on labelled logs, in one process (no Ray), checked
against a plain forward pass and torchmetrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from helpers.scoring_data import ROWS_PER_FILE, input_files, random_export, write_logs
from jobs.evaluate import main as evaluate_main
from pipeline.common.errors import EXIT_BAD_DATA
from pipeline.data.collate import collate
from pipeline.data.reader import iter_record_batches
from pipeline.train.export import load_export

DAY = "2026-01-02"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_logs(tmp_path_factory.mktemp("logs"))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("models")
    return [random_export(root / f"export-{seed}", seed=seed) for seed in (0, 1)]


def _expected(
    export: str, files: list[str], max_rows: int | None = None, where: tuple[str, str] | None = None
) -> dict[str, float]:
    """The metrics computed the plain way: every prediction kept, torchmetrics' AUC over the same
    1,000 thresholds (a random model's scores crowd a few bins: exact AUC differs by ~0.01).
    `where`: (column, value), the rows with that value only."""
    model, spec, _ = load_export(export)
    probs, labels, masks = [], [], []
    with torch.no_grad():
        for path, rb in iter_record_batches(files, spec, 700, max_rows=max_rows):
            b = collate(rb, spec, source=path)
            keep = torch.ones(len(b), dtype=torch.bool)
            if where is not None:
                keep = torch.tensor([v == where[1] for v in rb.column(where[0]).to_pylist()])
            probs.append(torch.sigmoid(model(b.sparse_features, b.dense_features))[keep])
            labels.append(b.labels[keep])
            masks.append(b.label_masks[keep])
    p, y, m = torch.cat(probs), torch.cat(labels), torch.cat(masks)
    out = {}
    for i, task in enumerate(spec.task_names):
        pt, yt = p[m[:, i], i], y[m[:, i], i]
        out[f"{task}/auc"] = binary_auroc(pt, yt.long(), thresholds=1000).item()
        out[f"{task}/logloss"] = torch.nn.functional.binary_cross_entropy(pt, yt).item()
        out[f"{task}/calibration"] = (pt.sum() / yt.sum()).item()
        out[f"{task}/count"], out[f"{task}/positives"] = float(len(yt)), yt.sum().item()
    return out


def test_metrics_equal_a_plain_forward_pass_and_the_json_holds_them(exports, data, tmp_path, capsys):
    files = [str(f) for f in input_files(data) if DAY in str(f)]
    report = evaluate_main(
        ["--model", exports[0], "--input", str(data), "--days", DAY, "--json", str(tmp_path / "out" / "e.json")]
    )
    [result] = report["models"]
    assert report["files"] == files and result["rows"] == len(files) * ROWS_PER_FILE
    got, want = result["metrics"], _expected(exports[0], files)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert 0 < got["ctr/gauc"] < 1 and got["ctr/gauc_groups"] > 1  # the spec's group_by: user_id
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"model {exports[0]} (version ") and out[0].endswith(f"{result['rows']:,} rows of 3 files")
    ctr = got["ctr/count"], got["ctr/positives"]
    assert out[1].startswith(f"  ctr: AUC {got['ctr/auc']:.4f}, GAUC {got['ctr/gauc']:.4f}, logloss ")
    assert out[1].endswith(f"; {int(ctr[0]):,} rows, {int(ctr[1]):,} positives")
    assert out[-1] == f"results: {tmp_path / 'out' / 'e.json'}"
    written = json.loads((tmp_path / "out" / "e.json").read_text())
    assert written["models"][0]["metrics"] == got and written["models"][0]["version"] == result["version"]


def test_two_models_see_the_same_first_rows_and_their_differences_are_printed(exports, data, capsys):
    files = [str(f) for f in input_files(data) if DAY in str(f)]
    max_rows = 2 * ROWS_PER_FILE + 345  # into the third file, mid-batch
    report = evaluate_main(
        ["--model", exports[0], "--model", exports[1], "--input", str(data), "--days", DAY]
        + ["--max-rows", str(max_rows), "--batch-size", "1000"]
    )
    first, second = report["models"]
    assert first["rows"] == second["rows"] == max_rows
    assert first["metrics"]["ctr/count"] == max_rows
    assert second["metrics"]["ctr/auc"] == pytest.approx(_expected(exports[1], files, max_rows)["ctr/auc"], abs=1e-5)
    assert first["version"] != second["version"]
    d = {k: second["metrics"][f"{k}"] - first["metrics"][f"{k}"] for k in ("ctr/auc", "ctr/gauc", "cvr/logloss")}
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"{exports[1]} against {exports[0]}: ctr AUC {d['ctr/auc']:+.4f}, GAUC {d['ctr/gauc']:+.4f}")
    assert "; cvr AUC " in last and f"logloss {d['cvr/logloss']:+.4f}" in last


def test_logs_without_a_label_column_exit_65_naming_the_file_and_column(exports, data, tmp_path, capsys):
    source = input_files(data)[0]
    bad = tmp_path / "logs" / "dt=2026-01-01" / "part-0.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(source).drop_columns(["conversion"]), bad)
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--model", exports[0], "--input", str(tmp_path / "logs")])
    assert exit_.value.code == EXIT_BAD_DATA
    assert capsys.readouterr().err.strip() == f"error: {bad}: column 'conversion': missing label column"


def test_unmeasurable_metrics_are_null_in_the_json(exports, data, tmp_path):
    """One row: no task has both labels, so no AUC; the JSON says null, not NaN (not JSON)."""
    out = tmp_path / "e.json"
    report = evaluate_main(["--model", exports[0], "--input", str(data), "--max-rows", "1", "--json", str(out)])
    assert math.isnan(report["models"][0]["metrics"]["ctr/auc"])
    assert json.loads(out.read_text())["models"][0]["metrics"]["ctr/auc"] is None


def _day_files(data: Path) -> dict[str, list[str]]:
    return {day: [str(f) for f in input_files(data) if day in str(f)] for day in ("2026-01-01", DAY)}


def test_by_day_gives_each_days_metrics_and_the_same_totals(exports, data, tmp_path, capsys):
    whole = evaluate_main(["--model", exports[0], "--input", str(data)])["models"][0]
    capsys.readouterr()
    out = tmp_path / "e.json"
    [result] = evaluate_main(["--model", exports[0], "--input", str(data), "--by-day", "--json", str(out)])["models"]
    assert result["rows"] == whole["rows"] and result["metrics"] == pytest.approx(whole["metrics"], abs=1e-9)
    lines = capsys.readouterr().out.splitlines()
    assert lines[3] == "  by day:"
    for line, (day, files) in zip(lines[4:6], _day_files(data).items(), strict=True):
        got, want = result["days"][day]["metrics"], _expected(exports[0], files)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-5), (day, key)
        assert result["days"][day]["rows"] == len(files) * ROWS_PER_FILE
        assert line.startswith(f"    {day}: {len(files) * ROWS_PER_FILE:,} rows; ctr AUC {got['ctr/auc']:.4f} (GAUC ")
        assert f"; cvr AUC {got['cvr/auc']:.4f} (GAUC " in line
    assert json.loads(out.read_text())["models"][0]["days"][DAY]["metrics"] == result["days"][DAY]["metrics"]


def test_by_day_takes_max_rows_of_each_day(exports, data):
    max_rows = ROWS_PER_FILE + 345
    report = evaluate_main(["--model", exports[1], "--input", str(data), "--by-day", "--max-rows", str(max_rows)])
    [result] = report["models"]
    assert result["rows"] == 2 * max_rows
    for day, files in _day_files(data).items():
        assert result["days"][day]["rows"] == max_rows
        auc = _expected(exports[1], files, max_rows)["ctr/auc"]
        assert result["days"][day]["metrics"]["ctr/auc"] == pytest.approx(auc, abs=1e-5), day


def test_by_day_on_a_file_outside_the_day_partitions_exits_1_naming_it(exports, data, tmp_path, capsys):
    loose = tmp_path / "logs" / "part-0.parquet"
    loose.parent.mkdir()
    pq.write_table(pq.read_table(input_files(data)[0]), loose)
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--model", exports[0], "--input", str(tmp_path / "logs"), "--by-day"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == f"error: --by-day: {loose} is in no dt=YYYY-MM-DD directory"


def test_slice_gives_each_values_metrics_most_rows_first(exports, data, tmp_path, capsys):
    files = [str(f) for f in input_files(data) if DAY in str(f)]
    out = tmp_path / "e.json"
    report = evaluate_main(
        ["--model", exports[0], "--input", str(data), "--days", DAY, "--slice", "device"] + ["--json", str(out)]
    )
    [result] = report["models"]
    slices = result["slices"]
    assert sum(s["rows"] for s in slices.values()) == result["rows"] == len(files) * ROWS_PER_FILE
    assert len(slices) > 1 and [s["rows"] for s in slices.values()] == sorted(
        (s["rows"] for s in slices.values()), reverse=True
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[3] == "  by device:"
    for line, (device, got) in zip(lines[4 : 4 + len(slices)], slices.items(), strict=True):
        want = _expected(exports[0], files, where=("device", device))
        for key, value in want.items():
            assert got["metrics"][key] == pytest.approx(value, abs=1e-5), (device, key)
        assert got["rows"] == want["ctr/count"]
        assert line.startswith(f"    {device}: {got['rows']:,} rows; ctr AUC {got['metrics']['ctr/auc']:.4f} (GAUC ")
    written = json.loads(out.read_text())
    assert written["slice"] == "device" and written["models"][0]["slices"].keys() == slices.keys()


def test_a_slice_column_that_cannot_slice_fails_before_any_work(exports, data, capsys):
    first = input_files(data)[0]
    for column, code, error in [
        ("price", 1, "error: slice column 'price': more than 100 values; slice by a column of fewer"),
        ("nope", EXIT_BAD_DATA, f"error: {first}: column 'nope': missing slice column"),
        (
            "history",
            EXIT_BAD_DATA,
            f"error: {first}: column 'history': a list or struct per row: a slice needs one value per row",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_:
            evaluate_main(["--model", exports[0], "--input", str(data), "--slice", column])
        assert exit_.value.code == code
        assert capsys.readouterr().err.strip().startswith(error), column
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--model", exports[0], "--input", str(data), "--slice", "device", "--by-day"])
    assert exit_.value.code == 2
