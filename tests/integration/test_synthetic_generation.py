"""Generated logs through Ray tasks (the same files as in one process) and through `python -m jobs.generate`."""

import subprocess
import sys

import pyarrow.parquet as pq

from pipeline.data.synthetic import generate_dataset


def test_generate_dataset_with_ray_tasks(ray_local, tmp_path):
    out = tmp_path / "syn"
    written = generate_dataset(str(out), rows=10_001, days=2, files_per_day=3, seed=5, chunk_rows=1000, ray_tasks=True)
    assert len(written) == 6 and sum(w["rows"] for w in written) == 10_001
    files = sorted(out.glob("dt=*/part-*.parquet"))
    assert [f.parent.name for f in files] == ["dt=2026-01-01"] * 3 + ["dt=2026-01-02"] * 3
    assert not list(out.rglob("*.tmp"))  # temp names were renamed away
    for w in written:
        assert pq.ParquetFile(w["path"]).metadata.num_rows == w["rows"]
    # deterministic: a second run, in this process, writes identical tables, and files of a run all differ
    again = generate_dataset(
        str(tmp_path / "again"), rows=10_001, days=2, files_per_day=3, seed=5, chunk_rows=1000, ray_tasks=False
    )
    first = [pq.read_table(w["path"]) for w in written]
    assert all(pq.read_table(a["path"]).equals(t) for a, t in zip(again, first, strict=True))
    assert not first[0].equals(first[1])


def test_generate_cli(tmp_path, repo_root):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.generate",
            "--out",
            str(out),
            "--rows",
            "3000",
            "--days",
            "2",
            "--files-per-day",
            "2",
            "--seed",
            "0",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 3,000 rows in 4 files" in proc.stdout
    assert len(list(out.glob("dt=*/part-*.parquet"))) == 4
    # The days every config trains on by default (configs/jobs/: from 2026-01-01).
    assert sorted(p.name for p in out.glob("dt=*")) == ["dt=2026-01-01", "dt=2026-01-02"]
