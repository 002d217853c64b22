"""Offline batch scoring (pipeline/score/run.py, jobs/score.py): scores equal the model's own
forward pass, every input row gets exactly one score row even when the job or an actor is
killed, bad input and foreign outputs fail before any work, and a 2-node cluster works."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from helpers.process_utils import wait_for
from helpers.scoring_data import (
    BASE,
    DAYS,
    FILES_PER_DAY,
    KEYS,
    ROWS_PER_FILE,
    input_files,
    random_export,
    score_config,
    write_logs,
)
from pipeline.data.collate import collate
from pipeline.data.validation import DataValidationError
from pipeline.score.errors import ScoringError
from pipeline.score.output import MANIFEST
from pipeline.score.plan import plan_scoring
from pipeline.score.run import score
from pipeline.train.export import load_export


@pytest.fixture(scope="module")
def export(tmp_path_factory, repo_root) -> str:
    return random_export(tmp_path_factory.mktemp("model") / "export", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_logs(tmp_path_factory.mktemp("logs"))


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.parquet") if not p.name.startswith("."))


def assert_exactly_once(out: Path, data: Path) -> pa.Table:
    """One output file per input file (same relative path), one row per input row (joined on
    impression_id, unique on both sides), nothing temporary left, manifest complete."""
    inputs = input_files(data)
    assert [p.relative_to(out) for p in _outputs(out)] == [p.relative_to(data) for p in inputs]
    assert not [p for p in out.rglob(".*") if p.is_file()], "temporary files left behind"
    for i, o in zip(inputs, _outputs(out), strict=True):
        ids_in = pq.read_table(i, columns=["impression_id"])["impression_id"]
        ids_out = pq.read_table(o, columns=["impression_id"])["impression_id"]
        assert len(ids_out) == len(ids_in) == ROWS_PER_FILE
        assert pc.count_distinct(ids_out).as_py() == len(ids_out), f"duplicate rows in {o}"
        assert pc.all(pc.is_in(ids_in, value_set=ids_out)).as_py(), f"rows lost in {o}"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["files"]) == len(inputs)
    return pa.concat_tables(pq.read_table(o) for o in _outputs(out))


def _forward(export: str, data: Path) -> pa.Table:
    """The model's own forward pass on the same rows: keys and probabilities."""
    model, spec, _ = load_export(export)
    tables = [pq.read_table(p) for p in input_files(data)]
    with torch.no_grad():
        probs = [
            torch.sigmoid(model(b.sparse_features, b.dense_features)).numpy()
            for b in (collate(t, spec, with_labels=False) for t in tables)
        ]
    p = np.concatenate(probs)
    keys = pa.concat_tables(t.select(KEYS) for t in tables)
    return keys.append_column("ref_ctr", pa.array(p[:, 0])).append_column("ref_cvr", pa.array(p[:, 1]))


@pytest.fixture(scope="module")
def scored(ray_local, export, data, tmp_path_factory):
    """One job run during which a scoring actor is SIGKILLed once it has scored a batch: Ray
    Data restarts it and retries its batches; a batch delivered twice would be dropped by the
    writer (row hashes). The job completes in this one run."""
    out = tmp_path_factory.mktemp("scored") / "out"
    killed: list[int] = []
    progress_seen: list[dict] = []

    def kill_one_actor(progress: dict) -> None:
        progress_seen.append(progress)
        busy = [a for a in progress["actors"] if a["rows"] > 0]
        if busy and not killed:
            os.kill(busy[0]["pid"], signal.SIGKILL)
            killed.append(busy[0]["pid"])

    summary = score(
        export, str(data), str(out), score_config(batch_size=400, debug_batch_delay_s=0.2), on_progress=kill_one_actor
    )
    return out, summary, killed, progress_seen


def test_scores_equal_the_models_forward_pass_despite_a_killed_actor(scored, export, data):
    out, summary, killed, progress = scored
    total = DAYS * FILES_PER_DAY * ROWS_PER_FILE
    # Progress lines: rows done of the rows planned (from the footers), and the ETA they imply.
    assert progress and all(p["rows_total"] == total for p in progress)
    for p in progress:
        if p["rows_per_s"] > 0:
            assert p["eta_s"] == pytest.approx((total - p["rows"]) / p["rows_per_s"])
    assert killed, "no actor was killed"
    assert (summary.rows_scored, summary.files_scored, summary.files_skipped) == (total, 6, 0)
    # The killed process was one of the scoring actors (Ray restarts it as a new process, which
    # then reports too); all report their peak memory.
    pids = {a["pid"] for a in summary.actors}
    assert killed[0] in pids and len(pids) >= 2 and all(a["peak_rss_mb"] > 0 for a in summary.actors)
    # Every actor process, the restarted one too, got jemalloc through its runtime_env.
    assert [a["allocator"] for a in summary.actors] == ["jemalloc"] * len(summary.actors)
    got = assert_exactly_once(out, data)
    assert got.schema.names == KEYS + ["p_ctr", "p_cvr", "p_ctcvr", "model_version"]
    version = json.loads((Path(export) / "model.json").read_text())["version"]
    assert pc.unique(got["model_version"]).to_pylist() == [version]

    joined = got.join(_forward(export, data), keys=KEYS)
    assert joined.num_rows == total
    ctr, cvr = joined["p_ctr"].to_numpy(), joined["p_cvr"].to_numpy()
    np.testing.assert_allclose(ctr, joined["ref_ctr"].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(cvr, joined["ref_cvr"].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(joined["p_ctcvr"].to_numpy(), ctr * cvr, rtol=1e-6)
    assert ctr.std() > 0 and cvr.std() > 0  # per-row scores, not a constant


def test_rerun_of_a_complete_output_does_nothing(scored, export, data):
    out = scored[0]
    before = {p: p.stat().st_mtime_ns for p in _outputs(out)}
    summary = score(export, str(data), str(out), score_config())  # Ray is not even needed
    assert (summary.rows_scored, summary.files_scored, summary.files_skipped) == (0, 0, 6)
    assert {p: p.stat().st_mtime_ns for p in _outputs(out)} == before


def test_a_day_rewritten_upstream_is_scored_again_without_its_old_files_scores(
    ray_local, scored, export, data, tmp_path
):
    """A day whose files were written again under other names (a Spark backfill names its parts
    anew): the new files are scored, and the outputs of the files that are gone are removed,
    or every row of that day would be scored twice. The other day's outputs stay as they were."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    shutil.copytree(scored[0], out)
    shutil.copytree(data, logs)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "input_root": str(logs)}))  # as if scored from here
    rewritten = logs / "dt=2026-01-02"
    for i, part in enumerate(sorted(rewritten.glob("*.parquet"))[:2]):  # 3 files -> 2, the same rows
        part.rename(rewritten / f"part-backfill-{i}.parquet")
    last = sorted(rewritten.glob("part-0*.parquet"))[0]
    tables = [pq.read_table(p) for p in sorted(rewritten.glob("part-backfill-*.parquet"))]
    pq.write_table(pa.concat_tables([tables[0], pq.read_table(last)]), rewritten / "part-backfill-0.parquet")
    last.unlink()
    kept = {p: p.stat().st_mtime_ns for p in _outputs(out / "dt=2026-01-01")}
    said: list[str] = []
    summary = score(export, str(logs), str(out), score_config(), log=said.append)
    assert (summary.files_scored, summary.files_skipped) == (2, 3)
    assert any("removed 3 outputs whose input files are gone" in line for line in said), said
    outputs = _outputs(out / "dt=2026-01-02")
    assert [p.name for p in outputs] == ["part-backfill-0.parquet", "part-backfill-1.parquet"]
    ids_in = pa.concat_tables(pq.read_table(p, columns=["impression_id"]) for p in sorted(rewritten.glob("*.parquet")))
    ids_out = pa.concat_tables(pq.read_table(p, columns=["impression_id"]) for p in outputs)
    assert ids_out.num_rows == ids_in.num_rows == 3 * ROWS_PER_FILE
    assert pc.count_distinct(ids_out["impression_id"]).as_py() == ids_out.num_rows
    assert {p: p.stat().st_mtime_ns for p in _outputs(out / "dt=2026-01-01")} == kept
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and sorted(manifest["files"]) == sorted(
        str(p.relative_to(logs)) for p in logs.rglob("*.parquet")
    )


def test_output_of_another_model_version_is_never_mixed(scored, data, tmp_path, repo_root):
    out = tmp_path / "out"
    shutil.copytree(scored[0], out)
    other = random_export(tmp_path / "other", seed=1)
    with pytest.raises(ScoringError, match="complete result .* another run .*model_version"):
        plan_scoring(other, str(data), str(out), score_config())
    # A partial result of another version is refused too (a killed run's renamed files count).
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"], manifest["complete"] = {}, False
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ScoringError, match="partial result"):
        plan_scoring(other, str(data), str(out), score_config())
    # Parquet files without a manifest: not ours, refused even with overwrite.
    (out / MANIFEST).unlink()
    with pytest.raises(ScoringError, match="no _manifest.json"):
        plan_scoring(other, str(data), str(out), score_config(), overwrite=True)
    shutil.copy(scored[0] / MANIFEST, out / MANIFEST)
    plan = plan_scoring(other, str(data), str(out), score_config(), overwrite=True)
    assert len(plan.pending) == 6 and not _outputs(out)  # the old result was deleted first


def test_bad_value_found_while_scoring_names_the_file(ray_local, export, data, tmp_path):
    """A NaN is invisible to the footer checks; the actor's collate finds it, and the job fails
    with the same error the plan would raise (file, column, rows), not a wrapped traceback."""
    bad = tmp_path / "bad" / "dt=2026-01-01"
    bad.mkdir(parents=True)
    table = pq.read_table(input_files(data)[0])
    price = table["price"].to_numpy().copy()
    price[[5, 9]] = np.nan
    pq.write_table(
        table.set_column(table.schema.get_field_index("price"), "price", pa.array(price)), bad / "part-00000.parquet"
    )
    with pytest.raises(DataValidationError) as err:
        score(export, str(tmp_path / "bad"), str(tmp_path / "out"), score_config(num_actors=1))
    assert (err.value.file, err.value.column, err.value.count) == (str(bad / "part-00000.parquet"), "price", 2)
    assert not _outputs(tmp_path / "out") and not list((tmp_path / "out").rglob(".*tmp*"))
    # Its scoring actor is gone although the error (whose traceback reaches the actor's handle
    # through Ray Data's frames) is still held: left to Python's cycle collector, the actor kept
    # its CPU, and the next job in this driver waited for one forever.
    wait_for(
        lambda: ray_local.available_resources().get("CPU") == ray_local.cluster_resources()["CPU"],
        "the failed job's scoring actor to give its CPU back",
        timeout=60,
    )
    del err


def test_killed_job_rerun_scores_every_row_exactly_once(ray_local, export, data, tmp_path, repo_root):
    """SIGKILL the whole job (driver process group) once some files are committed, then run
    the same command again."""
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "jobs.score", "--model", export, "--input", str(data), "--output", str(out)]
    cmd += [
        "--address",
        address,
        *(f"{k}={v}" for k, v in {**BASE, "batch_size": 400, "debug_batch_delay_s": 0.3}.items()),
    ]
    with open(tmp_path / "killed.log", "w") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(cmd, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not (out / MANIFEST).exists() or not json.loads((out / MANIFEST).read_text())["files"]:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    committed = len(json.loads((out / MANIFEST).read_text())["files"])
    assert 0 < committed < 6, "the job was not killed mid-way"

    # The rerun also covers actors left on the system allocator (glibc, with fixed thresholds).
    summary = score(export, str(data), str(out), score_config(actor_allocator="system"))
    assert summary.files_skipped >= committed and summary.files_scored == 6 - summary.files_skipped
    assert {a["allocator"] for a in summary.actors} == {"system"}
    assert_exactly_once(out, data)


def test_scoring_on_a_two_node_cluster(export, data, tmp_path, repo_root):
    """A separate process: ray.cluster_utils.Cluster cannot share this process with the
    session's local Ray. Each node offers one `scorer` slot, so the two actors must land on
    different nodes."""
    out = tmp_path / "out"
    script = repo_root / "tests" / "helpers" / "two_node_scoring.py"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # timeout: a hang guard only (a cluster that cannot place a task waits forever), not a limit.
    result = subprocess.run(
        [sys.executable, str(script), export, str(data), str(out)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["nodes"] == 2 and len({a["node"] for a in report["actors"]}) == 2
    assert {a["allocator"] for a in report["actors"]} == {"jemalloc"}  # on the worker node too
    assert report["rows_scored"] == DAYS * FILES_PER_DAY * ROWS_PER_FILE
    assert_exactly_once(out, data)
