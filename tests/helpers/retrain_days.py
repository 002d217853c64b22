"""Days of synthetic logs for the retraining tests, written one by one as a log pipeline would."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.data.synthetic import SyntheticConfig, write_file

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
ROWS = 20_000  # per day; a small catalogue (300 users, 100 items) so that one day teaches a lot


def write_day(root: Path, index: int, shuffle_labels: bool = False, rows: int = ROWS, id_drift: float = 0.0) -> None:
    """Day DAYS[index] of synthetic logs. shuffle_labels: the (click, conversion) pairs are
    permuted across rows, so labels no longer depend on the features (conversion still implies
    click). id_drift: the share of users and items replaced every day (the generator's knob)."""
    path = root / f"dt={DAYS[index]}" / "part-00000.parquet"
    write_file(
        str(path),
        rows,
        seed=7,
        day_index=index,
        file_index=0,
        config=SyntheticConfig(num_users=300, num_items=100, id_drift=id_drift),
    )
    if shuffle_labels:
        table = pq.read_table(path)
        perm = np.random.default_rng(index).permutation(table.num_rows)
        for col in ("click", "conversion"):
            table = table.set_column(table.schema.get_field_index(col), col, table[col].take(perm))
        tmp = path.with_name(".shuffled.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)


def registry_files(root) -> dict[str, str]:
    """sha256 of every file of the registry: the versions and the production pointer (not the
    hidden .staging/ work area or the lock, which are not part of it)."""
    root, out = Path(root), {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("."):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def attempt_dirs(runs: Path) -> list[str]:
    """The training attempts' directories left under the retrain's output_dir. The retrain's own
    directory (<output_dir>/<name>: its logs and its TensorBoard curves of the daily gate) stays."""
    return sorted(p.name for p in runs.iterdir() if p.name != "ple-retrain") if runs.is_dir() else []
