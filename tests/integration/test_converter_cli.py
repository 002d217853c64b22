"""`python -m jobs.convert` on the public CSV samples."""

import subprocess
import sys

import pyarrow.parquet as pq


def test_convert_cli(tmp_path, samples_dir, repo_root):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.convert",
            "aliexpress",
            "--csv",
            str(samples_dir / "aliexpress_test_sample.csv"),
            "--out",
            str(tmp_path),
            "--day",
            "2018-01-03",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "20 rows -> 1 file in" in proc.stdout
    assert pq.read_metadata(tmp_path / "dt=2018-01-03" / "part-aliexpress_test_sample-00000.parquet").num_rows == 20
