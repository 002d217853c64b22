"""Convert the public Ali-CCP and AliExpress CSV layouts into the project's Parquet layout.

The CSVs are streamed block by block (pyarrow.csv.open_csv), so the full public datasets
(tens of millions of rows) convert in bounded memory. Output, one day per call:

    <out>/dt=<day>/part-<csv stem>-00000.parquet, -00001, ...   (rows_per_file rows each)

Day convention: the public datasets carry no dates, so the caller names the day. We suggest
train = 2018-01-01, val = 2018-01-02, test = 2018-01-03, so that the reader's day ranges split
them (train: 2018-01-01..2018-01-01, eval: 2018-01-02..2018-01-02).

Column names are made YAML/identifier friendly and labels are unified to `click` and
`conversion` across datasets (Ali-CCP calls conversion `purchase`); see configs/features/ali_ccp.yaml
and configs/features/aliexpress.yaml for the matching feature specs. Types: ids int64, dense float32,
labels int8. Value checks (labels 0/1, conversion only after click, ...) are the reader's job,
which applies them to every dataset alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.data.validation import DataValidationError


@dataclass(frozen=True)
class CsvLayout:
    """CSV column -> Parquet column, per role."""

    name: str
    ids: dict[str, str]
    dense: dict[str, str]
    labels: dict[str, str]

    def arrow_types(self) -> dict[str, pa.DataType]:
        types = {c: pa.int64() for c in self.ids}
        types.update({c: pa.float32() for c in self.dense})
        types.update({c: pa.int8() for c in self.labels})
        return types

    def renames(self) -> dict[str, str]:
        return {**self.ids, **self.dense, **self.labels}


_ALI_CCP_SPARSE = [
    "101",
    "121",
    "122",
    "124",
    "125",
    "126",
    "127",
    "128",
    "129",
    "205",
    "206",
    "207",
    "210",
    "216",
    "508",
    "509",
    "702",
    "853",
    "301",
    "109_14",
    "110_14",
    "127_14",
    "150_14",
]
_ALI_CCP_DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]

ALI_CCP = CsvLayout(
    name="ali_ccp",
    ids={c: f"f_{c}" for c in _ALI_CCP_SPARSE},
    dense={c: f"d_{c[1:]}" for c in _ALI_CCP_DENSE},
    labels={"click": "click", "purchase": "conversion"},
)

ALIEXPRESS = CsvLayout(
    name="aliexpress",
    # search_id is kept (as an int64 id column) for grouping/debugging; the spec does not use it.
    ids={"search_id": "search_id", **{f"categorical_{i}": f"categorical_{i}" for i in range(1, 17)}},
    dense={f"numerical_{i}": f"numerical_{i}" for i in range(1, 64)},
    labels={"click": "click", "conversion": "conversion"},
)

LAYOUTS = {layout.name: layout for layout in (ALI_CCP, ALIEXPRESS)}


class RollingWriter:
    """Writes record batches into numbered files part-<stem>-NNNNN.parquet of at most
    rows_per_file rows. Every file is written under a hidden temporary name (readers skip it);
    `finish` publishes them all and removes the files of an earlier conversion of the same stem
    that the new ones do not replace, `abort` removes them. So a conversion that fails leaves
    the day as it was, and one repeated with fewer files leaves no stale rows beside them."""

    def __init__(self, directory: str, stem: str, rows_per_file: int, schema: pa.Schema | None = None):
        """`schema`: the files'; None: the first batch's."""
        self.directory, self.stem, self.schema, self.rows_per_file = directory, stem, schema, rows_per_file
        self.written: list[dict] = []  # completed files, under their final paths once finished
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            if self._writer is None:
                self._rows = 0
                self.schema = self.schema or batch.schema
                self._writer = pq.ParquetWriter(self._tmp(len(self.written)), self.schema)
            take = min(batch.num_rows, self.rows_per_file - self._rows)
            self._writer.write_batch(batch.slice(0, take))
            self._rows += take
            batch = batch.slice(take)
            if self._rows == self.rows_per_file:
                self._close()

    def _final(self, index: int) -> str:
        return os.path.join(self.directory, f"part-{self.stem}-{index:05d}.parquet")

    def _tmp(self, index: int) -> str:
        return os.path.join(self.directory, f".{os.path.basename(self._final(index))}.tmp")

    def _close(self) -> None:
        assert self._writer is not None  # called only while a file is open
        self._writer.close()
        self.written.append({"path": self._final(len(self.written)), "rows": self._rows})
        self._writer = None

    def abort(self) -> None:
        """Drop every file of this conversion; the day keeps what it had."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for index in range(len(self.written) + 1):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._tmp(index))

    def finish(self) -> list[dict]:
        if self._writer is not None:
            self._close()
        for index, f in enumerate(self.written):
            os.replace(self._tmp(index), f["path"])
        mine = re.compile(rf"^part-{re.escape(self.stem)}-\d{{5,}}\.parquet$")
        published = {os.path.basename(f["path"]) for f in self.written}
        for name in os.listdir(self.directory):
            if mine.match(name) and name not in published:
                os.remove(os.path.join(self.directory, name))  # an earlier conversion's, now stale
        return self.written


def convert_csv(
    csv_path: str, out_dir: str, day: str, layout: CsvLayout, rows_per_file: int = 2_000_000, block_size: int = 16 << 20
) -> list[dict]:
    """Stream one CSV into out_dir/dt=<day>/; returns [{path, rows}] of the files written."""
    csv_path = str(csv_path)
    day = dt.date.fromisoformat(day).isoformat()  # fail early on a malformed --day
    types = layout.arrow_types()
    try:
        header = pacsv.open_csv(csv_path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
    except (pa.ArrowInvalid, OSError) as e:
        raise DataValidationError(f"cannot read CSV header ({e})", file=csv_path) from None
    missing = [c for c in types if c not in header]
    if missing:
        raise DataValidationError(
            f"missing {layout.name} CSV columns {missing}", file=csv_path, column=", ".join(missing)
        )
    renames = layout.renames()
    directory = os.path.join(out_dir, f"dt={day}")
    os.makedirs(directory, exist_ok=True)
    writer = None
    try:
        # open_csv already parses the first block, so it sits inside the try as well.
        reader = pacsv.open_csv(
            csv_path,
            read_options=pacsv.ReadOptions(block_size=block_size),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(types)),
        )
        schema = pa.schema([(renames[f.name], f.type) for f in reader.schema])
        writer = RollingWriter(directory, Path(csv_path).stem, rows_per_file, schema)
        for batch in reader:
            writer.write(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
    except pa.ArrowInvalid as e:
        # Arrow says e.g. "In CSV column #5: CSV conversion error to int64: invalid value 'x'".
        m = re.search(r"CSV column #(\d+)", str(e))
        column = header[int(m.group(1))] if m and int(m.group(1)) < len(header) else None
        if writer is not None:
            writer.abort()
        raise DataValidationError(f"bad CSV value ({e})", file=csv_path, column=column) from None
    return writer.finish()


def convert_ali_ccp(csv_path: str, out_dir: str, day: str, **kwargs) -> list[dict]:
    return convert_csv(csv_path, out_dir, day, ALI_CCP, **kwargs)


def convert_aliexpress(csv_path: str, out_dir: str, day: str, **kwargs) -> list[dict]:
    return convert_csv(csv_path, out_dir, day, ALIEXPRESS, **kwargs)
