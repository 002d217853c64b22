"""Propose a feature spec from the Parquet data itself (`python -m jobs.inspect`).

One streaming pass over the day files (pyarrow record batches, one file open at a time), so
memory stays flat as the data grows: per column the statistics of column_stats.py (counters,
DataSketches HLL and KLL sketches, streaming mean/variance); per label its positive rate.

Before any row is read every file's footer is checked: a column whose type differs between
files, or that some files lack, and a missing label fail with a DataValidationError naming the
files. The pass then refuses labels that are not 0/1, columns that are null everywhere and
columns equal to a label in every row (a leak), each naming file and column.

Each column becomes (spec_choice.py, `choose_feature`):
- int / string: a sparse feature with a table of its own, `vocab_size = max + 1` when the ids
  are dense in [0, n) (min >= 0, max + 1 <= 2 x distinct), else `hash_buckets`: for up to
  COLLISION_FREE_MAX_VALUES values the smallest size >= 2 x distinct where no two of them share
  a row, else the power of two >= 2 x distinct; dim 4..64 from the cardinality.
- list<int> / list<string>: the same, multi-valued, pooling mean.
- float, and ints named in `numeric`: a dense feature, `bucketize` with keep_raw (or
  `piecewise_linear` / `standard`): one bucket per value up to PER_VALUE_BUCKETS_MAX distinct
  values, else quantile boundaries; fewer than 3 distinct values, or bool: `standard`.
- left out, with the reason in a comment: keys (distinct >= 90% of the values, 1000 values or
  more), constants, types the spec cannot express.
Any null (NaN for floats, null or empty lists and null ids inside lists) sets `missing: default`.

The YAML (spec_yaml.py) carries a comment above each choice saying what drove it, and is checked
to load back to the same values and to validate as a FeatureSpec before it is returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from pipeline.common.config import ConfigError
from pipeline.common.logs import plural
from pipeline.data.column_stats import (
    EXACT_DISTINCT,
    ColumnAccumulator,
    ColumnStats,
    LabelCounts,
    as_float,
    column_kind,
    label_comment,
    rows_text,
    type_text,
)
from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
from pipeline.data.files import list_day_files
from pipeline.data.spec_choice import NUMERIC_ENCODINGS, PER_VALUE_BUCKETS_MAX, Choice, choose_feature
from pipeline.data.spec_yaml import render_spec
from pipeline.data.validation import DataValidationError

BATCH_ROWS = 65536


# -- results --------------------------------------------------------------------------------------
@dataclass
class InspectResult:
    text: str  # the YAML spec, comments included
    spec: FeatureSpec
    files: list[str]
    rows: int
    stats: dict[str, ColumnStats]  # every column read, labels included
    choices: list[Choice]  # one per column of the files, in schema order
    label_rates: dict[str, float]
    left_out: dict[str, str] = field(default_factory=dict)  # column -> reason

    def choice(self, column: str) -> Choice:
        return next(c for c in self.choices if c.column == column)


def parse_task(text: str) -> dict[str, str]:
    """NAME=LABEL[@SAMPLE_SPACE] -> a task mapping (sample space `all` by default)."""
    m = re.fullmatch(r"([^=@\s]+)=([^=@\s]+)(?:@([^=@\s]+))?", text.strip())
    if not m:
        raise ValueError(f"--task {text!r}: expected NAME=LABEL or NAME=LABEL@SAMPLE_SPACE")
    return {"name": m.group(1), "label": m.group(2), "sample_space": m.group(3) or "all"}


# -- the pass -------------------------------------------------------------------------------------
def _read_schema(path: str) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataValidationError(f"not a readable Parquet file ({e})", file=path) from None


def _check_schemas(files: list[str], labels: Sequence[str], exclude: set[str]) -> dict[str, pa.DataType]:
    """column -> type, the same in every file (footers only)."""
    first: dict[str, pa.DataType] = {}
    for i, path in enumerate(files):
        schema = _read_schema(path)
        for label in labels:
            if schema.get_field_index(label) < 0:
                raise DataValidationError("missing label column", file=path, column=label)
        names = [n for n in schema.names if n not in exclude]
        if i == 0:
            first = {n: schema.field(n).type for n in names}
            continue
        for n in names:
            t = schema.field(n).type
            if n not in first:
                raise DataValidationError(
                    f"not in {files[0]} (every file must have the same columns; or --exclude {n})", file=path, column=n
                )
            if t != first[n]:
                raise DataValidationError(
                    f"type {type_text(t)} here but {type_text(first[n])} in {files[0]} "
                    f"(mixed types across files; or --exclude {n})",
                    file=path,
                    column=n,
                )
        for n in first:
            if schema.get_field_index(n) < 0:
                raise DataValidationError(
                    f"missing here but present in {files[0]} (every file must have the same columns; or --exclude {n})",
                    file=path,
                    column=n,
                )
    return first


def inspect_days(root: str, start_day: str, end_day: str, labels: Sequence[str], **options: Any) -> InspectResult:
    """inspect_files over ROOT/dt=DAY/*.parquet for the days in [start_day, end_day]."""
    files = list_day_files(root, start_day, end_day)
    options.setdefault("source", f"{root}, days {start_day}..{end_day}")
    return inspect_files(files, labels, **options)


def inspect_files(
    files: Sequence[str],
    labels: Sequence[str],
    *,
    tasks: Sequence[dict[str, str] | str] | None = None,
    exclude: Sequence[str] = (),
    group_by: str | None = None,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    numeric_encoding: str = "bucketize",
    buckets: int = 32,
    name: str = "inspected",
    source: str | None = None,
    command: str | None = None,
    batch_rows: int = BATCH_ROWS,
) -> InspectResult:
    """One pass over `files`; returns the proposed spec (text and model) and what drove it."""
    files = list(files)
    labels = list(labels)
    if not files:
        raise DataValidationError("no Parquet files to inspect")
    if not labels:
        raise ConfigError("name at least one label column")
    if numeric_encoding not in NUMERIC_ENCODINGS:
        raise ConfigError(f"numeric encoding must be one of {NUMERIC_ENCODINGS}, got {numeric_encoding!r}")
    if buckets < 2:
        raise ConfigError(f"buckets must be at least 2, got {buckets}")
    both = set(numeric) & set(categorical)
    if both:
        raise ConfigError(f"columns named both numeric and categorical: {sorted(both)}")
    task_list = [parse_task(t) if isinstance(t, str) else dict(t) for t in tasks] if tasks else None
    if not task_list:
        task_list = [{"name": label, "label": label, "sample_space": "all"} for label in labels]
    for task in task_list:  # before the pass: FeatureSpec would say the same, but only after it
        if task.get("label") not in labels or task.get("sample_space", "all") not in ("all", *labels):
            raise ConfigError(f"task {task}: its label and sample space must be among the labels {labels} (or 'all')")
    if group_by is not None and group_by in labels:
        raise ConfigError(f"group_by '{group_by}' is a label")
    excluded = set(exclude)
    for label in labels:
        if label in excluded or label in numeric or label in categorical:
            raise ConfigError(f"label '{label}' cannot be excluded or named as a feature")

    types = _check_schemas(files, labels, excluded - {group_by} if group_by else excluded)
    all_names = set(_read_schema(files[0]).names)
    for option, cols in (("--exclude", exclude), ("--numeric", numeric), ("--categorical", categorical)):
        for c in cols:
            if c not in (all_names if option == "--exclude" else types):
                raise DataValidationError(f"{option} names a column the files do not have", file=files[0], column=c)
    if group_by is not None and group_by not in types:
        raise DataValidationError("--group-by names a column the files do not have", file=files[0], column=group_by)

    kinds = {c: column_kind(t) for c, t in types.items()}
    for label in labels:
        if kinds[label] not in ("int", "float", "bool"):
            raise DataValidationError(
                f"a label must be 0/1 numbers, got type {type_text(types[label])}", file=files[0], column=label
            )
    for c in numeric:
        if kinds[c] not in ("int", "float", "bool"):
            raise DataValidationError(
                f"--numeric: type {type_text(types[c])} cannot be numeric", file=files[0], column=c
            )
    for c in categorical:
        if kinds[c] not in ("int", "string", "list<int>", "list<string>"):
            raise DataValidationError(
                f"--categorical: type {type_text(types[c])} cannot be an id (ints and strings can)",
                file=files[0],
                column=c,
            )
    if group_by is not None and kinds[group_by] not in ("int", "string"):
        raise DataValidationError(
            f"group_by must be int or string, got type {type_text(types[group_by])}", file=files[0], column=group_by
        )

    label_set = set(labels)
    read = [c for c, k in kinds.items() if k is not None]
    accs = {c: ColumnAccumulator(c, types[c], kinds[c] or "") for c in read if c not in label_set}
    label_accs = {label: LabelCounts(label) for label in labels}
    # (column, label) pairs equal in every row so far: number columns only.
    same = {(c, label) for c in accs if kinds[c] in ("int", "float", "bool") for label in labels}
    as_dictionary = [c for c in read if kinds[c] == "string"]

    rows = 0
    for path in files:
        pf = pq.ParquetFile(path, read_dictionary=as_dictionary)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=read):
            rows += batch.num_rows
            ys = {}
            for label, lab in label_accs.items():
                y = as_float(batch.column(label))
                ys[label] = y
                lab.rows += len(y)
                lab.positives += int((y == 1).sum())
                lab.bad_in_file += int(((y != 0) & (y != 1)).sum())  # NaN (null) counts as bad
            for c, acc in accs.items():
                acc.update(batch.column(c))
            for c in {c for c, _ in same}:
                x = as_float(batch.column(c))
                for label in labels:
                    if (c, label) in same and not np.array_equal(x, ys[label]):
                        same.discard((c, label))
        for lab in label_accs.values():
            if lab.bad_in_file:
                raise DataValidationError(
                    "label values other than 0/1 (labels must be 0/1 ints, bools or floats, without nulls)",
                    file=path,
                    column=lab.name,
                    count=lab.bad_in_file,
                )
        for c, acc in accs.items():
            if acc.inf:
                raise DataValidationError(
                    f"infinite values (the collate rejects them; or --exclude {c})", file=path, column=c, count=acc.inf
                )
    if rows == 0:
        raise DataValidationError(f"no rows in {plural(len(files), 'file')}", file=files[0])

    stats = {c: acc.finish() for c, acc in accs.items()}
    for c, s in stats.items():
        if s.values == 0:
            raise DataValidationError(
                f"{'null or empty' if s.kind.startswith('list<') else 'null'} in every one of the {s.rows} rows "
                f"of {source or plural(len(files), 'file')}: "
                f"leave it out with --exclude {c}",
                file=files[0],
                column=c,
                count=s.rows,
            )
    for c, label in sorted(same):
        if stats[c].distinct >= 2:
            raise DataValidationError(
                f"equal to label '{label}' in every row: a leak, the model would read the answer "
                f"(leave it out with --exclude {c})",
                file=files[0],
                column=c,
            )
    if group_by is not None and group_by in stats and stats[group_by].nulls:
        raise DataValidationError(
            "null group ids (group_by must be set on every row)",
            file=files[0],
            column=group_by,
            count=stats[group_by].nulls,
        )

    label_rates = {label: lab.positives / lab.rows for label, lab in label_accs.items()}
    choices: list[Choice] = []
    for c in _read_schema(files[0]).names:
        t = types.get(c)
        if c in label_set:
            choices.append(Choice(c, "label", label_comment(c, label_accs[c])))
        elif c in excluded or t is None:  # (t is None: excluded, never read)
            choices.append(Choice(c, "left out", "--exclude"))
        elif kinds[c] is None:
            # Times are common in logs and unreadable as they are: say what to make of them.
            how = ": derive numbers from it upstream (hour, weekday, age in days)" if pa.types.is_temporal(t) else ""
            choices.append(Choice(c, "left out", f"type {type_text(t)} is not one a spec can read{how}"))
        else:
            choices.append(
                choose_feature(stats[c], accs[c], c in numeric, c in categorical, numeric_encoding, buckets, rows)
            )
    if not any(ch.role == "sparse" for ch in choices):
        raise DataValidationError(
            "no categorical column to embed: a spec needs at least one sparse feature (see --categorical)",
            file=files[0],
        )

    data: dict[str, Any] = {
        "name": name,
        "tables": [ch.table for ch in choices if ch.table is not None],
        "sparse": [ch.feature for ch in choices if ch.role == "sparse"],
        "dense": [ch.feature for ch in choices if ch.role == "dense"],
        "labels": labels,
        "tasks": task_list,
    }
    if group_by is not None:
        data["group_by"] = group_by
    header = [
        f"Feature spec proposed by `{command or 'python -m jobs.inspect'}` (pipeline/data/inspect.py):",
        "review it before training.",
        f"Data: {source or 'files'}: {plural(len(files), 'file')}, {rows_text(rows)}.",
        f"Distinct counts are HyperLogLog estimates ('about'; exact up to {EXACT_DISTINCT}). Bucket boundaries:",
        f"midpoints between the distinct values (up to {PER_VALUE_BUCKETS_MAX}), else quantiles of a KLL sketch.",
    ]
    text = render_spec(data, choices, header)
    loaded = yaml.safe_load(text)
    if loaded != data:  # a quoting or number-format slip in render_spec: never write such a file
        raise AssertionError(f"rendered spec does not load back to its values:\n{text}")
    spec = spec_from_dict(loaded, source="the inspected spec")
    return InspectResult(
        text=text,
        spec=spec,
        files=files,
        rows=rows,
        stats={**stats},
        choices=choices,
        label_rates=label_rates,
        left_out={ch.column: ch.why for ch in choices if ch.role == "left out"},
    )
