"""Convert any delimited text table (UCI Adult, say) into <out>/dt=<day>/part-<csv stem>-NNNNN.parquet.

Where converters.py knows the Ali layouts, this module is told the layout by CsvTableOptions:
column names (or a header row), the separator, missing-value markers, leading lines to skip,
columns to drop and 0/1 labels derived from a column's values (LabelRule).

Separator: pyarrow's CSV reader takes a one-character delimiter only, so a padded separator such
as ", " is read as "," and whitespace is trimmed from both ends of every value (quoting keeps
working, which splitting on ", " ourselves would not give).

Types: every column is read as text, trimmed and null-mapped, and then typed from the first block
with pyarrow's own parsers (cast): int64 if every value parses, else float64, else string; a
column with only nulls in the first block is string. pyarrow's CSV inference would run on the
untrimmed text (" 39", " ?") and may also pick bool/date/timestamp. The types are then fixed for
the whole file (`types` pins them, which the job does across several files). Labels are int8.

Bad data fails with a DataValidationError naming the file, the 1-based line (counting skipped
lines) and the column where known; the files written by the failed call are removed.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.common.config import ConfigError
from pipeline.common.logs import plural
from pipeline.data.converters import RollingWriter
from pipeline.data.validation import DataValidationError

TYPES = {"int64": pa.int64(), "float64": pa.float64(), "float32": pa.float32(), "string": pa.string()}
_TYPE_NAMES = {t: name for name, t in TYPES.items()}


@dataclass(frozen=True)
class LabelRule:
    """Output column `name` is 1 where column `column` is one of `positives`, else 0. With
    `negatives`, a value in neither list is unmapped (see CsvTableOptions.unmapped_labels)."""

    name: str
    column: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> LabelRule:
        """`name=column:pos,pos[/neg,neg]`, e.g. `income=income:>50K,>50K./<=50K,<=50K.`."""
        name, eq, rest = text.partition("=")
        column, colon, values = rest.partition(":")
        pos, slash, neg = values.partition("/")
        if not (eq and colon and name.strip() and column.strip() and pos.strip()):
            raise ConfigError(f"label {text!r}: expected name=column:positive,...[/negative,...]")
        split = lambda s: tuple(v.strip() for v in s.split(","))
        return cls(name.strip(), column.strip(), split(pos), split(neg) if slash else None)


@dataclass(frozen=True)
class CsvTableOptions:
    """How to read one table; see the module docstring."""

    columns: tuple[str, ...] | None = None  # None: the first row after skip_rows is the header
    sep: str = ","  # one character, optionally padded with whitespace: ", "
    na_values: tuple[str, ...] = ("",)  # compared with the trimmed text
    skip_rows: int = 0  # leading lines to skip (before the header, if any)
    drop: tuple[str, ...] = ()
    labels: tuple[LabelRule, ...] = ()
    unmapped_labels: Literal["fail", "drop"] = "fail"
    types: dict[str, str] = field(default_factory=dict)  # input column -> a TYPES key, else inferred
    rows_per_file: int = 2_000_000
    block_size: int = 16 << 20


@dataclass
class ConvertSummary:
    """What one convert_table call read and wrote."""

    csv: str
    rows_in: int = 0  # data rows read (empty lines are not rows)
    rows_written: int = 0
    files: list[dict] = field(default_factory=list)  # [{path, rows}]
    types: dict[str, str] = field(default_factory=dict)  # input column -> TYPES key (labels: int8)
    positives: dict[str, int] = field(default_factory=dict)  # label -> rows written with 1
    unmapped: dict[str, int] = field(default_factory=dict)  # label (with negatives) -> rows in neither list
    dropped: int = 0  # rows dropped for an unmapped label
    nulls: dict[str, int] = field(default_factory=dict)  # input column -> nulls written

    @property
    def label_rates(self) -> dict[str, float]:
        return {k: v / self.rows_written if self.rows_written else 0.0 for k, v in self.positives.items()}

    def line(self) -> str:
        """One line for the job's log."""
        where = os.path.dirname(self.files[0]["path"]) if self.files else "-"
        files = f"{plural(len(self.files), 'file')} in {where}"
        parts = [f"{self.csv}: {self.rows_in:,} rows in, {self.rows_written:,} written -> {files}"]
        if self.positives:
            parts.append("label rates " + " ".join(f"{k}={v:.2%}" for k, v in self.label_rates.items()))
        if self.unmapped:
            parts.append("unmapped " + " ".join(f"{k}={v:,}" for k, v in self.unmapped.items()))
            parts[-1] += f" ({plural(self.dropped, 'row')} dropped)" if self.dropped else ""
        nulls = " ".join(f"{k}={v:,}" for k, v in self.nulls.items() if v)
        parts.append(f"nulls {nulls or 'none'}")
        return "; ".join(parts)


def convert_table(csv_path: str | os.PathLike, out_dir: str, day: str, options: CsvTableOptions) -> ConvertSummary:
    """Stream one delimited file into out_dir/dt=<day>/ block by block; see the module docstring.
    Raises DataValidationError on bad data (nothing of this call's output is left behind)."""
    path = str(csv_path)
    day = dt.date.fromisoformat(day).isoformat()  # fail early on a malformed day
    if options.unmapped_labels not in ("fail", "drop"):
        raise ConfigError(f"unmapped_labels must be 'fail' or 'drop', not {options.unmapped_labels!r}")
    delimiter, trim = _delimiter(options.sep)
    names, skip = _column_names(path, options, delimiter)
    inputs = _inputs(path, names, options)
    needed = list(dict.fromkeys([*inputs, *(r.column for r in options.labels)]))
    types = {c: TYPES[t] for c, t in options.types.items()}
    na = pa.array(options.na_values, pa.string())
    out_names = [*inputs, *(r.name for r in options.labels)]
    s = ConvertSummary(path, positives={r.name: 0 for r in options.labels}, nulls=dict.fromkeys(inputs, 0))
    s.unmapped = {r.name: 0 for r in options.labels if r.negatives is not None}
    first_unmapped: dict[str, tuple[int, str]] = {}  # label -> (data row, value)
    line_of = lambda index: _line_of(path, skip, delimiter, index)
    invalid: list = []

    def on_invalid(row) -> str:
        invalid.append(row)
        return "error"  # a wrong field count is bad data: never skipped silently

    directory = os.path.join(out_dir, f"dt={day}")
    os.makedirs(directory, exist_ok=True)
    # Made before the first row: a conversion that keeps none still replaces the CSV's earlier files.
    writer = RollingWriter(directory, Path(path).stem, options.rows_per_file)
    try:
        reader = pacsv.open_csv(
            path,
            # one thread: pyarrow numbers an invalid row (row.number) only then
            read_options=pacsv.ReadOptions(
                skip_rows=skip, column_names=list(names), block_size=options.block_size, use_threads=False
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            # text first: nulls and types are decided on the trimmed values
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False, include_columns=needed
            ),
        )
        for batch in reader:
            start, s.rows_in = s.rows_in, s.rows_in + batch.num_rows
            text = {c: pc.utf8_trim_whitespace(batch.column(c)) if trim else batch.column(c) for c in needed}
            arrays, keep = _labels(text, options.labels, start, s.unmapped, first_unmapped)
            for c in inputs:
                values = pc.if_else(pc.is_in(text[c], value_set=na), pa.scalar(None, pa.string()), text[c])
                if c not in types:
                    types[c] = _infer(values)  # the first block decides, for the whole file
                arrays[c] = _cast(values, types[c], path, c, lambda i, start=start: line_of(start + i))
            out = pa.RecordBatch.from_arrays([arrays[c] for c in out_names], names=out_names)
            if keep is not None and options.unmapped_labels == "drop":
                out = out.filter(keep)
                s.dropped += batch.num_rows - out.num_rows
            if any(s.unmapped.values()) and options.unmapped_labels == "fail":
                continue  # the file fails at the end (with exact counts): no point writing
            writer.write(out)
            s.rows_written += out.num_rows
            for c in inputs:
                s.nulls[c] += out.column(c).null_count
            for rule in options.labels:
                s.positives[rule.name] += pc.sum(out.column(rule.name)).as_py() or 0
        for rule in options.labels:
            if s.unmapped.get(rule.name) and options.unmapped_labels == "fail":
                index, value = first_unmapped[rule.name]
                raise DataValidationError(
                    f"label '{rule.name}': values in neither {list(rule.positives)} nor {list(rule.negatives or ())}, "
                    f"first at line {line_of(index)}: {value!r} (unmapped_labels='drop' drops such rows)",
                    file=path,
                    column=rule.column,
                    count=s.unmapped[rule.name],
                )
        s.files = writer.finish()
    except BaseException as e:
        writer.abort()  # no partial output: the day keeps what it had
        if isinstance(e, pa.ArrowInvalid):
            raise _parse_error(path, e, invalid, lambda number: line_of(number - skip - 1)) from None
        raise
    s.types = {c: _TYPE_NAMES[types[c]] for c in inputs if c in types}
    return s


def _delimiter(sep: str) -> tuple[str, bool]:
    """(pyarrow delimiter, trim values?): ", " -> (",", True); "\\t" -> ("\\t", False)."""
    core = sep.strip() or sep
    if len(core) != 1:
        raise ConfigError(f"separator {sep!r}: one character, optionally padded with whitespace (', ')")
    return core, core != sep


def _column_names(path: str, options: CsvTableOptions, delimiter: str) -> tuple[tuple[str, ...], int]:
    """The column names and how many lines precede the data."""
    if options.columns is not None:
        return tuple(options.columns), options.skip_rows
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for _ in range(options.skip_rows):
            f.readline()
        reader = csv.reader(f, delimiter=delimiter)
        for row in reader:
            if row:
                return tuple(c.strip() for c in row), options.skip_rows + reader.line_num
    raise DataValidationError(f"no header row after {options.skip_rows} skipped lines", file=path)


def _inputs(path: str, names: tuple[str, ...], options: CsvTableOptions) -> list[str]:
    """The input columns written, in file order; checks every column the options name."""
    labels = [r.name for r in options.labels]
    if len(set(names)) < len(names):
        raise DataValidationError(f"duplicate column names in {list(names)}", file=path)
    if len(set(labels)) < len(labels):
        raise ConfigError(f"duplicate label names {labels}")
    named = dict.fromkeys([*options.drop, *(r.column for r in options.labels), *options.types])
    unknown = [c for c in named if c not in names]
    if unknown:
        raise DataValidationError(f"no such columns {unknown} in {list(names)}", file=path, column=", ".join(unknown))
    for r in options.labels:  # a label replaces its own source column, never another input
        if r.name in names and r.name != r.column and r.name not in options.drop:
            raise ConfigError(f"label '{r.name}' would replace column '{r.name}': rename the label or drop the column")
    inputs = [c for c in names if c not in options.drop and c not in labels]
    if bad := {c: t for c, t in options.types.items() if t not in TYPES or c not in inputs}:
        raise ConfigError(f"types {bad}: only input columns, as one of {list(TYPES)}")
    if not inputs and not labels:
        raise ConfigError("every column is dropped")
    return inputs


def _labels(
    text: dict[str, pa.Array], rules: tuple[LabelRule, ...], start: int, unmapped: dict, first: dict
) -> tuple[dict[str, pa.Array], pa.Array | None]:
    """The label columns of one block and the mask of its rows whose labels all map (None: all do);
    counts the unmapped rows per label and notes the first (data row, value) of each."""
    arrays, keep = {}, None
    for rule in rules:
        src = text[rule.column]
        is_pos = pc.is_in(src, value_set=pa.array(rule.positives, pa.string()))
        arrays[rule.name] = pc.cast(is_pos, pa.int8())
        if rule.negatives is None:
            continue
        mapped = pc.or_(is_pos, pc.is_in(src, value_set=pa.array(rule.negatives, pa.string())))
        if n := len(src) - (pc.sum(mapped).as_py() or 0):
            unmapped[rule.name] += n
            i = pc.index(mapped, False).as_py()
            first.setdefault(rule.name, (start + i, src[i].as_py()))
            keep = mapped if keep is None else pc.and_(keep, mapped)
    return arrays, keep


def _infer(values: pa.Array) -> pa.DataType:
    if values.null_count == len(values):
        return pa.string()
    for t in (pa.int64(), pa.float64()):
        try:
            pc.cast(values, t)
            return t
        except pa.ArrowInvalid:
            pass
    return pa.string()


def _cast(values: pa.Array, dtype: pa.DataType, path: str, column: str, line_of) -> pa.Array:
    try:
        return pc.cast(values, dtype)
    except pa.ArrowInvalid:
        lo, hi = 0, len(values)  # binary search for the first bad value: values[:lo] casts, values[:hi] not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                pc.cast(values.slice(0, mid), dtype)
                lo = mid
            except pa.ArrowInvalid:
                hi = mid
        raise DataValidationError(
            f"line {line_of(hi - 1)}: {values[hi - 1].as_py()!r} is not {_TYPE_NAMES[dtype]} "
            "(the type comes from the first block; pin another with types / --type)",
            file=path,
            column=column,
        ) from None


def _line_of(path: str, skip: int, delimiter: str, index: int) -> int | None:
    """1-based line where data row `index` (0-based) starts. Re-reads the file, on the error path
    only: pyarrow counts rows, not lines. Rows as pyarrow sees them: empty lines are not rows; a
    quoted value may span lines."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for _ in range(skip):
            f.readline()
        reader = csv.reader(f, delimiter=delimiter)
        end, seen = skip, 0
        for row in reader:
            begin, end = end + 1, skip + reader.line_num
            if row:
                if seen == index:
                    return begin
                seen += 1
    return None


def _parse_error(path: str, e: pa.ArrowInvalid, invalid: list, line_of) -> DataValidationError:
    if invalid:  # recorded by the invalid_row_handler
        row = invalid[0]
        # row.number counts rows, the skipped ones included, but not empty lines nor the extra
        # lines of a quoted value: line_of turns it into a line number
        line = line_of(row.number) if row.number else None
        return DataValidationError(
            f"line {line}: expected {row.expected_columns} fields, got {row.actual_columns}: {row.text[:200]!r}",
            file=path,
        )
    return DataValidationError(f"cannot parse CSV ({e})", file=path)
