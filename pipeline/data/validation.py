"""Checks on input files and batches. Every failure is a DataValidationError naming the file,
the column and how many rows are affected: bad data is never dropped silently.

Two layers:
1. `validate_files` (before reading, on the driver): opens each file's Parquet footer only.
   It catches files that are empty (0 bytes) or not Parquet, missing columns, wrong types,
   a partition whose schema differs from the first file's, and, from the row-group statistics,
   nulls where the feature's policy is `missing: error` (and in labels, always) and labels
   outside [0, 1]. When statistics show a problem, that one column of that one file is read
   to report an exact count.
2. The collate (pipeline/data/collate.py) re-checks the values of every batch, which also covers
   what statistics cannot show: NaN/inf dense values, labels such as 0.5, and a conversion
   without a click. It names the files when the batch carries Ray's `path` column, and counts
   the rows that a `missing: default` policy filled (Batch.missing).

Documented quarantine: a valid Parquet file with 0 rows is skipped and counted in the
ValidationReport (writers legitimately produce them for hours without traffic); everything
else raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.common.errors import EXIT_BAD_DATA, BadInputError
from pipeline.common.logs import plural
from pipeline.data.feature_spec import FeatureSpec

log = logging.getLogger(__name__)


class DataValidationError(BadInputError):
    """Bad input data. `file`, `column` and `count` say where and how much."""

    exit_status = EXIT_BAD_DATA

    def __init__(self, problem: str, *, file: str | None = None, column: str | None = None, count: int | None = None):
        self.problem, self.file, self.column, self.count = problem, file, column, count
        where = file or "<batch>"
        col = f" column '{column}':" if column else ""
        rows = f" ({plural(count, 'row')})" if count is not None else ""
        super().__init__(f"{where}:{col} {problem}{rows}")

    def __reduce__(self):
        # Keyword-only fields: the default pickling (args only) would rebuild a different
        # message when the error crosses processes (Ray workers, actors).
        return _rebuild_data_validation_error, (type(self), self.problem, self.file, self.column, self.count)


def _rebuild_data_validation_error(cls, problem, file, column, count):
    return cls(problem, file=file, column=column, count=count)


# -- what a missing-value policy filled ----------------------------------------------------------
FILLED_PREFIX = "missing/"  # metric key of the rows a feature's `missing: default` filled: missing/<feature>


def filled_from_metrics(metrics: Mapping[str, Any]) -> dict[str, int]:
    """feature -> filled rows, from a run's metrics (training reports them as missing/<feature>)."""
    return {k.removeprefix(FILLED_PREFIX): int(v) for k, v in metrics.items() if k.startswith(FILLED_PREFIX)}


def describe_filled(counts: Mapping[str, int]) -> str:
    """`native_country 274 rows, workclass 963 rows`: the summaries' one wording."""
    return ", ".join(f"{name} {rows:,} rows" for name, rows in sorted(counts.items()))


# -- expected Arrow types ------------------------------------------------------------------------
def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_str(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list_of(t: pa.DataType, value_ok) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and value_ok(t.value_type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


@dataclass(frozen=True)
class ColumnRole:
    role: str  # "sparse" | "dense" | "label" | "group"
    expected: str  # a type description, a key of _TYPE_CHECKS
    nulls_allowed: bool  # every feature reading the column has `missing: default`


def column_roles(spec: FeatureSpec, labels: bool = True) -> dict[str, ColumnRole]:
    """column -> its role, expected type and null policy for every column the spec reads.
    labels=False: inputs only (scoring reads unlabelled rows, without GAUC groups)."""
    roles: dict[str, ColumnRole] = {}

    def add(column: str, role: ColumnRole) -> None:
        seen = roles.get(column)
        # A column read by two features allows nulls only if both do.
        roles[column] = (
            role if seen is None else ColumnRole(role.role, role.expected, seen.nulls_allowed and role.nulls_allowed)
        )

    for f in spec.sparse:
        add(f.column, ColumnRole("sparse", f.type, f.missing == "default"))
    for d in spec.dense:
        add(d.column, ColumnRole("dense", "number", d.missing == "default"))
    if labels:
        for label in spec.labels:
            add(label, ColumnRole("label", "number", False))
        if spec.group_by:
            add(spec.group_by, ColumnRole("group", "int64 or string", False))
    return roles


_TYPE_CHECKS = {
    "int64": _is_int,
    "string": _is_str,
    "list<int64>": lambda t: _is_list_of(t, _is_int),
    "list<string>": lambda t: _is_list_of(t, _is_str),
    "number": _is_number,
    "int64 or string": lambda t: _is_int(t) or _is_str(t),
}


def type_problem(t: pa.DataType, expected: str) -> str | None:
    return None if _TYPE_CHECKS[expected](t) else f"wrong type {t}, expected {expected}"


def check_schema(schema: pa.Schema, spec: FeatureSpec, source: str | None, labels: bool = True) -> None:
    for column, r in column_roles(spec, labels).items():
        idx = schema.get_field_index(column)
        if idx < 0:
            raise DataValidationError(f"missing {r.role} column", file=source, column=column)
        problem = type_problem(schema.field(idx).type, r.expected)
        if problem:
            raise DataValidationError(problem, file=source, column=column)


# -- file pass -----------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    files: list[str] = field(default_factory=list)  # files with rows, to be read
    rows: int = 0
    skipped_empty: list[str] = field(default_factory=list)  # valid Parquet, 0 rows (quarantined)


def _open(path: str) -> pq.ParquetFile:
    size = os.path.getsize(path)
    if size == 0:
        raise DataValidationError("empty file (0 bytes), not a Parquet file", file=path)
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataValidationError(f"not a readable Parquet file ({e})", file=path) from None


def _stat_problems(pf: pq.ParquetFile, spec: FeatureSpec, labels: bool = True) -> dict[str, str]:
    """Columns whose row-group statistics prove a problem: column -> problem kind."""
    roles = column_roles(spec, labels)
    meta = pf.metadata
    leaf: dict[str, int] = {}
    for i in range(meta.num_columns):
        # Leaf paths are 'x' for flat columns, 'history.list.element' for lists.
        leaf.setdefault(meta.schema.column(i).path.split(".")[0], i)
    found: dict[str, str] = {}
    for column, r in roles.items():
        index = leaf.get(column)
        # Leaf statistics of a list column count empty lists as nulls, so lists are left to the
        # batch checks.
        if index is None or r.expected.startswith("list<"):
            continue
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(index).statistics
            if st is None:
                continue
            if st.null_count and not r.nulls_allowed:
                found[column] = "nulls"
                break
            if r.role == "label" and st.has_min_max and (st.min < 0 or st.max > 1):
                found[column] = "label_range"
                break
    return found


def _exact_count(path: str, column: str, kind: str) -> tuple[str, int]:
    arr = pq.read_table(path, columns=[column]).column(column).combine_chunks()
    if kind == "nulls":
        n = arr.null_count + (arr.flatten().null_count if pa.types.is_list(arr.type) else 0)
        return "null values (a feature may set missing: default; labels may not)", n
    return "label values other than 0/1", int(pc.sum(pc.invert(pc.is_in(arr, pa.array([0, 1], arr.type)))).as_py() or 0)


def validate_files(paths: Iterable[str], spec: FeatureSpec, labels: bool = True) -> ValidationReport:
    """Footer-only checks of every file; raises DataValidationError on the first bad file.
    labels=False checks the model's inputs only (scoring)."""
    report = ValidationReport()
    reference: tuple[str, pa.Schema] | None = None
    wanted = list(column_roles(spec, labels))
    nulls: dict[str, int | None] = dict.fromkeys(wanted, 0)  # per input column, over the range
    for path in paths:
        pf = _open(path)
        schema = pf.schema_arrow
        check_schema(schema, spec, path, labels)
        sub = pa.schema([schema.field(c) for c in wanted])
        if reference is None:
            reference = (path, sub)
        elif not sub.equals(reference[1]):
            diffs = [
                f"{c}: {sub.field(c).type} here vs {reference[1].field(c).type}"
                for c in wanted
                if sub.field(c).type != reference[1].field(c).type
            ]
            raise DataValidationError(
                f"schema differs from {reference[0]} ({'; '.join(diffs)})",
                file=path,
                column=", ".join(c for c in wanted if sub.field(c).type != reference[1].field(c).type),
            )
        if pf.metadata.num_rows == 0:
            log.warning("skipping %s: valid Parquet file with 0 rows", path)
            report.skipped_empty.append(path)
            continue
        for column, kind in _stat_problems(pf, spec, labels).items():
            problem, count = _exact_count(path, column, kind)
            if count:  # statistics are a hint; only an exact, non-zero count fails the file
                raise DataValidationError(problem, file=path, column=column, count=count)
        for column, n in _null_counts(pf, wanted).items():
            seen = nulls[column]
            nulls[column] = None if seen is None or n is None else seen + n
        report.files.append(path)
        report.rows += pf.metadata.num_rows
    for column, n in nulls.items():
        if report.rows and n == report.rows:
            # A `missing: default` feature that is never present teaches the model nothing: it
            # is a misspelt or dropped upstream column more often than a real feature.
            raise DataValidationError(
                f"every row is null in all {len(report.files)} files: remove the feature or fix the data",
                file=report.files[0],
                column=column,
                count=n,
            )
    return report


def _null_counts(pf: pq.ParquetFile, columns: list[str]) -> dict[str, int | None]:
    """Null rows per flat column from the row-group statistics (None where they are missing).
    Lists are left out: their leaf statistics count null elements, not null rows."""
    meta = pf.metadata
    leaf = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    out: dict[str, int | None] = {}
    for column in columns:
        index = leaf.get(column)
        if index is None:
            continue
        total: int | None = 0
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(index).statistics
            total = None if st is None or total is None else total + st.null_count
        out[column] = total
    return out
