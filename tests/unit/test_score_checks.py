"""Scoring's checks before any work (bad input, model references) and its per-file output
commit, without Ray (tests/integration/test_score_job.py runs the job)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from helpers.scoring_data import input_files, random_export, score_config, write_logs
from pipeline.data.validation import DataValidationError
from pipeline.score.errors import ScoringError
from pipeline.score.output import FileOutput
from pipeline.score.plan import plan_scoring
from pipeline.score.run import ScoreSummary, progress_line, score
from pipeline.train.export import ExportError


@pytest.fixture(scope="module")
def export(tmp_path_factory, repo_root) -> str:
    return random_export(tmp_path_factory.mktemp("model") / "export", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_logs(tmp_path_factory.mktemp("logs"))


def test_bad_input_fails_before_any_work(export, data, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad"
    table = pq.read_table(input_files(data)[0])
    cases = {
        "missing": (table.drop_columns(["price"]), DataValidationError, r"column 'price': missing dense column"),
        "wrong_type": (
            table.set_column(
                table.schema.get_field_index("user_id"), "user_id", pc.cast(table["user_id"], pa.string())
            ),
            DataValidationError,
            r"column 'user_id': wrong type string, expected int64",
        ),
        "no_key": (
            table.drop_columns(["impression_id"]),
            DataValidationError,
            r"column 'impression_id': missing key column: --keys COL,\.\.\. \(key_columns\) names the input "
            r"columns copied beside each row's scores; this file has user_id, ",
        ),
        "no_labels": (table.drop_columns(["click", "conversion"]), None, None),  # fine for scoring
    }
    for t, error, message in cases.values():
        shutil.rmtree(bad, ignore_errors=True)
        (bad / "dt=2026-01-01").mkdir(parents=True)
        pq.write_table(t, bad / "dt=2026-01-01" / "part-00000.parquet")
        if error is None:
            assert len(plan_scoring(export, str(bad), str(out), score_config()).pending) == 1
        else:
            with pytest.raises(error, match=message):
                score(export, str(bad), str(out), score_config())
    with pytest.raises(ExportError, match="not an exported model"):
        score(str(data), str(data), str(out), score_config())
    with pytest.raises(ExportError, match="neither an export directory nor a registry reference"):
        score("ple-latest", str(data), str(out), score_config())
    (tmp_path / "broken").mkdir()
    shutil.copy(Path(export) / "model.json", tmp_path / "broken" / "model.json")
    (tmp_path / "broken" / "tables").mkdir()
    for name in json.loads((Path(export) / "model.json").read_text())["weights"]:
        (tmp_path / "broken" / name).write_bytes(b"not a tensor file")
    with pytest.raises(ExportError, match="unreadable weight files"):
        score(str(tmp_path / "broken"), str(data), str(out), score_config())
    with pytest.raises(DataValidationError, match="no partition directory for day 2026-01-03"):
        score(export, str(data), str(out), score_config(), days="2026-01-02..2026-01-03")
    fix = r"'products=\{\}' for none, .*'products=\{ctcvr: \[ctr, cvr\]\}'"
    with pytest.raises(ScoringError, match=r"products.ctcvr uses tasks .*" + fix):
        score(export, str(data), str(out), score_config(products={"ctcvr": ["ctr", "purchase"]}))
    assert not out.exists()  # nothing was started


def test_a_registry_can_resolve_model_names(export, data, tmp_path, monkeypatch):
    import pipeline.registry.versions as registry

    monkeypatch.setattr(registry, "resolve_model_ref", lambda ref: export if ref == "ple@production" else None)
    plan = plan_scoring("ple@production", str(data), str(tmp_path / "out"), score_config())
    assert plan.model_dir == export and len(plan.pending) == 6
    with pytest.raises(ExportError, match="model 'ple@v0009': neither an export directory nor a registry reference"):
        plan_scoring("ple@v0009", str(data), str(tmp_path / "out"), score_config())


def test_a_directory_mistaken_for_an_export_is_answered_with_the_one_meant(export, data, tmp_path):
    """A training run's directory, one of its checkpoints, a registry root: each says where the
    export is (or how to name it)."""
    run = tmp_path / "runs" / "ple"
    shutil.copytree(export, run / "export")
    (run / "step_00000015").mkdir()
    (run / "step_00000015" / ".metadata").write_bytes(b"")
    orphan = tmp_path / "orphan" / "step_00000007"
    orphan.mkdir(parents=True)
    (orphan / ".metadata").write_bytes(b"")
    registry = tmp_path / "registry"
    (registry / "versions").mkdir(parents=True)
    (registry / "production").write_text("{}")
    not_export = "not an exported model (expected model.json and its weight files)"
    for model, meant in [
        (run, f"its export is --model {run / 'export'}"),
        (run / "step_00000015", f"it is a training checkpoint: its run's export is --model {run / 'export'}"),
        (orphan, "it is a training checkpoint: export it first (pipeline.train.export.export_model)"),
        (registry, f"it is a model registry: --model {registry}@production (or @vNNNN)"),
    ]:
        with pytest.raises(ExportError) as err:
            plan_scoring(str(model), str(data), str(tmp_path / "out"), score_config())
        assert str(err.value) == f"{model}: {not_export}; {meant}"
    assert plan_scoring(str(run / "export"), str(data), str(tmp_path / "out"), score_config()).pending


def test_file_output_commits_only_complete_files_and_drops_duplicates(tmp_path):
    schema = pa.schema([("k", pa.int64())])
    rows = np.arange(10, dtype=np.int64)
    hashes = rows.astype(np.uint64) * np.uint64(7919)
    w = FileOutput(tmp_path / "part.parquet", schema, expected_rows=10, run_id="t", write_rows=4)
    w.add(pa.table({"k": rows[:6]}), hashes[:6])
    w.add(pa.table({"k": rows[2:6]}), hashes[2:6])  # a batch delivered twice
    assert not w.complete()  # 10 rows received but 4 are duplicates
    w.add(pa.table({"k": rows[6:]}), hashes[6:])
    assert w.complete() and not (tmp_path / "part.parquet").exists()
    assert w.commit() == 4
    assert sorted(pq.read_table(tmp_path / "part.parquet")["k"].to_pylist()) == rows.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_progress_line_labels_the_eta_and_the_time_elapsed():
    info = {
        "elapsed_s": 65.2,
        "files_done": 1,
        "files": 4,
        "rows": 200_000,
        "rows_total": 800_000,
        "rows_per_s": 200_000 / 65.2,
        "eta_s": 600_000 / (200_000 / 65.2),
        "actors": [{"peak_rss_mb": 498.4}, {"peak_rss_mb": 707.0}],
    }
    assert progress_line(info) == (
        "[score] 1/4 files, 200,000/800,000 rows, 3,067 rows/s, ETA 3:16, 1:05 elapsed, 2 actors (peak RSS 707 MB)"
    )
    # Before the first file is committed there is no rate, hence no ETA; nor actors' stats yet.
    first = {**info, "files_done": 0, "rows": 0, "rows_per_s": 0.0, "eta_s": None, "actors": [], "elapsed_s": 3.0}
    assert progress_line(first) == "[score] 0/4 files, 0/800,000 rows, 0 rows/s, 3 s elapsed, 0 actors (peak RSS 0 MB)"


def test_summary_counts_in_words_that_agree_with_the_numbers():
    actor = {"peak_rss_mb": 500.0, "peak_anon_mb": 300.0, "node": "n1", "allocator": "jemalloc"}
    one = ScoreSummary("v1", "/out", 1, 1, 0, 1, 2.0, 1.0, 1.0, 0, [actor]).format()
    assert "scored 1 row in 1 file (0 of 1 already complete)" in one and "; 1 actor process on 1 node," in one
    # A killed actor restarted by Ray reports as a process of its own.
    many = ScoreSummary("v1", "/out", 3, 2, 1, 400, 2.0, 1.0, 1.0, 0, [actor, actor, {**actor, "node": "n2"}]).format()
    assert "scored 400 rows in 2 files (1 of 3 already complete)" in many and "; 3 actor processes on 2 nodes," in many


def test_an_output_another_scoring_job_writes_is_refused_naming_it(tmp_path):
    import os

    from pipeline.score.output import lock_output

    out = tmp_path / "out"
    with lock_output(out):
        refused = (
            rf"^output {out} is being written by another scoring job \(pid {os.getpid()} on .*; lock {out / '_lock'}\)$"
        )
        with pytest.raises(ScoringError, match=refused), lock_output(out):
            pass
    with lock_output(out):  # released with the first job's block
        pass
