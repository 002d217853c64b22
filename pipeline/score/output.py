"""The scoring job's output directory, written by the driver only: per-file outputs committed
by atomic rename, the manifest of completed files, the lock, and the clean-up of temporary
files a killed run left. See pipeline/score/run.py for how they give exactly-once output."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.files import TMP_MARK, exclusive_lock, write_text_atomic
from pipeline.score.errors import ScoringError

MANIFEST, LOCK = "_manifest.json", "_lock"
LOGS = "_logs"  # under the output directory: the job's full logs, the driver's and every actor's


def log_dir(output_dir: str | Path) -> Path:
    """Where a scoring job writes its full logs (pipeline/common/logs.py)."""
    return Path(output_dir) / LOGS


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ScoringError(f"{path}: unreadable manifest ({e}); remove the output directory or pick another") from None


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def output_parquet_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]


def remove_result(out: Path, manifest: dict) -> None:
    """overwrite=True: delete a previous result (its files, then its manifest)."""
    for entry in manifest.get("files", {}).values():
        (out / entry["output"]).unlink(missing_ok=True)
    for p in output_parquet_files(out):  # renamed but not yet listed when that run was killed
        p.unlink()
    (out / MANIFEST).unlink(missing_ok=True)


class FileOutput:
    """One output file: rows buffered, written to a temporary file, renamed when complete.

    Complete = as many distinct row hashes as the input file has rows. Rows whose hash was
    already received (a batch delivered twice by a retried task) are removed before the rename.
    """

    def __init__(self, final: Path, schema: pa.Schema, expected_rows: int, run_id: str, write_rows: int):
        self.final, self.schema, self.expected, self.write_rows = final, schema, expected_rows, write_rows
        self.tmp = final.with_name(f".{final.name}{TMP_MARK}{run_id}")
        self.buffer: list[pa.Table] = []
        self.buffered = self.received = 0
        self.hashes: list[np.ndarray] = []
        self.writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table, hashes: np.ndarray) -> None:
        self.buffer.append(table)
        self.hashes.append(hashes)
        self.buffered += table.num_rows
        self.received += table.num_rows
        if self.buffered >= self.write_rows:
            self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        if self.buffer:
            self.writer.write_table(pa.concat_tables(self.buffer).cast(self.schema))
        self.buffer, self.buffered = [], 0

    def _distinct(self) -> int:
        if len(self.hashes) > 1:
            self.hashes = [np.concatenate(self.hashes)]
        return int(np.unique(self.hashes[0]).size) if self.hashes else 0

    def complete(self) -> bool:
        return self.received >= self.expected and self._distinct() == self.expected

    def commit(self) -> int:
        """Write what is buffered, drop duplicates, rename to the final name; returns the
        number of duplicate rows dropped."""
        self._flush()
        assert self.writer is not None  # _flush opens it, even for a file of no rows
        self.writer.close()
        duplicates = self.received - self.expected
        if duplicates:
            hashes = np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64)
            _, first = np.unique(hashes, return_index=True)
            table = pq.read_table(self.tmp).take(pa.array(np.sort(first)))
            pq.write_table(table, self.tmp)
        os.replace(self.tmp, self.final)
        return duplicates

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def remove_temp_files(out: Path) -> int:
    stale = [p for p in out.rglob(f".*{TMP_MARK}*") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)


def lock_output(out: Path) -> contextlib.AbstractContextManager[None]:
    """Advisory lock on <out>/_lock for the run, for `with`; released when this process exits or
    dies (pipeline/common/files.py's exclusive_lock)."""

    def busy(holder: str) -> ScoringError:
        return ScoringError(f"output {out} is being written by another scoring job ({holder}; lock {out / LOCK})")

    return exclusive_lock(out / LOCK, busy)
