"""Day-partitioned Parquet files: which files a day range holds, and Ray Data reads of exactly
those files and columns. No torch here: the jobs' drivers list and read files without the
training stack (`pipeline/data/reader.py` turns what is read into `Batch`es).

Layout: <root>/dt=YYYY-MM-DD/part-*.parquet. Only the dt=... directories inside the requested
day range are listed (partition pruning by construction), and the resulting file list goes to
ray.data.read_parquet, so days outside the range are never opened. Files whose names start
with '.' or '_' (writers' temp files, _SUCCESS markers) are ignored.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.ray_data_tuning import shorten_scheduling_delays
from pipeline.data.feature_spec import FeatureSpec
from pipeline.data.validation import DataValidationError, validate_files

DAY_DIR = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")  # a day's partition: its name, the day in group 1
PATH_COLUMN = "path"  # added by ray.data.read_parquet(include_paths=True); used to name files

# read_parquet_files passes dataset_kwargs on purpose (see there); Ray's V1 datasource warns on
# every read that the argument is deprecated, which tells our users nothing they can act on.
logging.getLogger("ray.data._internal.datasource.parquet_datasource").addFilter(
    lambda record: "`dataset_kwargs` is a deprecated parameter" not in record.getMessage()
)


def day_range(start_day: str, end_day: str) -> list[str]:
    """Inclusive list of ISO days."""
    first, last = dt.date.fromisoformat(start_day), dt.date.fromisoformat(end_day)
    if last < first:
        raise ValueError(f"end_day {end_day} is before start_day {start_day}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def iso_day(text: str) -> str:
    """The day `text` names, written YYYY-MM-DD as the dt= partitions are (20260101 ->
    2026-01-01, as the converters and the generator write it); ValueError if it names none."""
    return dt.date.fromisoformat(text).isoformat()


def parse_days(text: str) -> tuple[str, str]:
    """(start, end) of "START..END" (inclusive) or of one day, both written YYYY-MM-DD;
    ValueError naming the text and what is wrong with it."""
    start, sep, end = text.partition("..")
    try:
        start, end = iso_day(start), iso_day(end if sep else start)
        day_range(start, end)
    except ValueError as e:
        raise ValueError(f"days '{text}': expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD ({e})") from None
    return start, end


def file_day(path: str) -> str | None:
    """The YYYY-MM-DD of the innermost dt=YYYY-MM-DD directory above `path`, None if none is."""
    for part in reversed(os.path.dirname(path).split(os.sep)):
        if m := DAY_DIR.match(part):
            return m[1]
    return None


def existing_days(root: str) -> str:
    """The day partitions under `root`, as an error message shows them."""
    if not os.path.isdir(root):
        return f"{root} does not exist"
    days = sorted(n[3:] for n in os.listdir(root) if n.startswith("dt="))
    if not days:
        return f"{root} has no dt=YYYY-MM-DD directories"
    shown = days if len(days) <= 6 else [*days[:3], "...", *days[-2:]]
    return f"days under {root}: {', '.join(shown)} ({len(days)} in all)"


def list_day_files(root: str, start_day: str, end_day: str, allow_missing_days: bool = False) -> list[str]:
    """Parquet files of the days in [start_day, end_day], opening only those directories. The
    paths are absolute: Ray's read tasks and Train controller do not run in the driver's working
    directory, so a relative `data.root` (configs/jobs/adult.yaml's `data/adult`) must not reach them."""
    root = os.path.abspath(root)
    files: list[str] = []
    for day in day_range(start_day, end_day):
        d = os.path.join(root, f"dt={day}")
        if not os.path.isdir(d):
            if allow_missing_days:
                continue
            raise DataValidationError(f"no partition directory for day {day} ({existing_days(root)})", file=d)
        names = sorted(n for n in os.listdir(d) if n.endswith(".parquet") and n[0] not in "._")
        files.extend(os.path.join(d, n) for n in names)
    if not files:
        raise DataValidationError(f"no Parquet files for days {start_day}..{end_day}", file=root)
    return files


def dictionary_columns(spec: FeatureSpec, keep_plain: tuple[str, ...] = ()) -> list[str]:
    """The spec's string id columns, to be decoded as Arrow dictionaries rather than strings.

    Parquet writers store such columns dictionary-encoded, so reading the dictionary skips
    materialising every string, and the collate then hashes each distinct string once
    (benchmarks/bench_reader.py: decode 10 -> 15M rows/s, collate 9 -> 14M rows/s on the
    synthetic logs). `keep_plain`: columns the caller writes back out (scoring's key columns),
    whose type must not change."""
    return [f.column for f in spec.sparse if f.type == "string" and f.column not in keep_plain]


def dictionary_read_schema(first_file: str, columns: list[str], as_dictionary: list[str]) -> pa.Schema:
    """Read schema: `columns` typed as in `first_file` (validated to be the same in every
    file), with `as_dictionary` typed dictionary<int32, string>, so that every block has the
    types the reader's format options produce."""
    schema = pq.read_schema(first_file)
    fields = []
    for name in columns:
        f = schema.field(name)
        if name in as_dictionary and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            f = f.with_type(pa.dictionary(pa.int32(), f.type))
        fields.append(f)
    return pa.schema(fields)


def read_days(
    root: str,
    start_day: str,
    end_day: str,
    spec: FeatureSpec,
    *,
    validate: bool = True,
    include_paths: bool = False,
    allow_missing_days: bool = False,
    datasource_v2: bool = False,
    **read_parquet_args,
):
    """A ray.data.Dataset of the spec's columns for the days in [start_day, end_day].

    validate: footer checks of every file first (pipeline/data/validation.py), so a bad file fails
        here with its name rather than deep inside a Ray task.
    include_paths: keep Ray's per-row `path` column so that value errors found in a batch name
        the file directly. Off by default: Ray stores the full path string on every row of every
        block; iter_ray_batches(files=...) finds the file on the (rare) failure path instead.
    datasource_v2: use Ray 2.60's new Parquet datasource (its default). Off here because, as
        measured on this pipeline (tests/integration/test_data_memory.py, benchmarks/bench_reader.py), V2
        emitted one block per read task (whole files) so the training process's memory grew with
        the rows read and the first batch came seconds later; V1 streams ~20k-row blocks.
    """
    # For the process that iterates the dataset (Ray Train's split coordinator gets it from the
    # worker setup hook); not for scoring, which reads with read_parquet_files directly.
    shorten_scheduling_delays()
    files = list_day_files(root, start_day, end_day, allow_missing_days)
    if validate:
        files = validate_files(files, spec).files
        if not files:
            raise DataValidationError(f"all files for days {start_day}..{end_day} are empty", file=root)
    # The collate (validation, hashing, normalisation) stays in the trainer's iterator: moving
    # it into Ray Data (map_batches producing pre-hashed Arrow) was measured slower under Ray
    # Train's streaming_split on 2 cores (0.20 vs 0.43 of in-memory rows/s, bench_train.py).
    return read_parquet_files(
        files,
        spec.columns(),
        dictionary_columns(spec),
        include_paths=include_paths,
        datasource_v2=datasource_v2,
        **read_parquet_args,
    )


def read_parquet_files(
    files: list[str],
    columns: list[str],
    as_dictionary: Sequence[str] = (),
    *,
    datasource_v2: bool = False,
    block_bytes: int = 32 << 20,
    **read_parquet_args,
):
    """ray.data.read_parquet of exactly these files and columns, with Ray's V1 Parquet
    datasource unless datasource_v2 (see read_days for why), and no partition columns: callers
    choose days by the file list. Shared by training (read_days) and scoring (pipeline/score/run.py).

    as_dictionary: string columns decoded straight into Arrow dictionaries (the Parquet
    reader's `read_dictionary`). Only a read schema asking for dictionaries would decode every
    string and then encode it again: 160 against 102 ns/row on the synthetic logs.

    One read task per file unless `override_num_blocks` says otherwise: Ray's default of at
    least 200 blocks per read split each file's output into tiny ones, and the per-block
    overhead halved the reader's rows/s (benchmarks/bench_reader.py: 1.3M -> 2.8M rows/s, 2M
    rows in 8 files). Each task streams blocks of about `block_bytes` in memory (Ray's
    target_max_block_size, 128 MiB by default): with 32 MiB, ~300k rows of the synthetic logs,
    the first batch of a 1M-row file came after 0.18 s instead of 0.5 s, and the whole read was
    ~7% faster (overlapping decode and collate)."""
    import ray

    as_dictionary = list(as_dictionary)
    read_parquet_args.setdefault("override_num_blocks", len(files))
    if as_dictionary:
        # Ray's V1 datasource hands dataset_kwargs to pyarrow.parquet.ParquetDataset (and warns
        # that the argument is deprecated, in favour of V2, which it also maps).
        read_parquet_args["dataset_kwargs"] = {"read_dictionary": as_dictionary}
    # Both settings are read when the dataset is created (which copies the context), so they
    # apply to this dataset only.
    ctx = ray.data.DataContext.get_current()
    previous = ctx.use_datasource_v2, ctx.target_max_block_size
    ctx.use_datasource_v2, ctx.target_max_block_size = datasource_v2, block_bytes
    try:
        return ray.data.read_parquet(
            files,
            columns=columns,
            partitioning=None,
            schema=dictionary_read_schema(files[0], columns, as_dictionary),
            **read_parquet_args,
        )
    finally:
        ctx.use_datasource_v2, ctx.target_max_block_size = previous
