"""The reader tests' logs: 4 days x 2 files, plus files a reader must never open."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.data.synthetic import generate_table

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
ROWS_PER_FILE = 1500


def write_reader_logs(root: Path) -> Path:
    """Day 1 also holds a garbage file: any read that opens it fails, which proves that day
    ranges excluding day 1 never touch it. Day 2 holds a _SUCCESS marker and a writer's hidden
    temporary file."""
    for d, day in enumerate(DAYS):
        (root / f"dt={day}").mkdir()
        for f in range(2):
            pq.write_table(
                generate_table(ROWS_PER_FILE, seed=7, stream=(d, f)), root / f"dt={day}" / f"part-{f:05d}.parquet"
            )
    (root / f"dt={DAYS[0]}" / "part-99999.parquet").write_text("not parquet")
    (root / f"dt={DAYS[1]}" / "_SUCCESS").write_text("")
    (root / f"dt={DAYS[1]}" / ".part-00002.parquet.tmp").write_text("half written")
    return root
