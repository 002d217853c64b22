"""Streaming reader: day-partitioned Parquet -> Ray Data -> Batch (KJT + dense + labels).

Layout: <root>/dt=YYYY-MM-DD/part-*.parquet. Only the dt=... directories inside the requested
day range are listed (partition pruning by construction), and the resulting file list goes to
ray.data.read_parquet, so days outside the range are never opened. Files whose names start
with '.' or '_' (writers' temp files, _SUCCESS markers) are ignored.

Inside a Ray Train worker pass the dataset's name ("train"): the worker's shard comes from
ray.train.get_dataset_shard. Outside Ray Train pass the ray.data.Dataset itself. Without Ray at
all (scoring, tests), `iter_file_batches` streams the same files with pyarrow and the same
collate.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.batch import Batch
from pipeline.collate import collate
from pipeline.feature_spec import FeatureSpec
from pipeline.ray_data_tuning import shorten_scheduling_delays
from pipeline.rebatch import rebatched
from pipeline.validation import DataValidationError, validate_files

# read_parquet_files passes dataset_kwargs on purpose (see there); Ray's V1 datasource warns on
# every read that the argument is deprecated, which tells our users nothing they can act on.
logging.getLogger("ray.data._internal.datasource.parquet_datasource").addFilter(
    lambda record: "`dataset_kwargs` is a deprecated parameter" not in record.getMessage())


def day_range(start_day: str, end_day: str) -> list[str]:
    """Inclusive list of ISO days."""
    first, last = dt.date.fromisoformat(start_day), dt.date.fromisoformat(end_day)
    if last < first:
        raise ValueError(f"end_day {end_day} is before start_day {start_day}")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def list_day_files(root: str, start_day: str, end_day: str, allow_missing_days: bool = False) -> list[str]:
    """Parquet files of the days in [start_day, end_day], opening only those directories."""
    files = []
    for day in day_range(start_day, end_day):
        d = os.path.join(root, f"dt={day}")
        if not os.path.isdir(d):
            if allow_missing_days:
                continue
            raise DataValidationError(f"no partition directory for day {day}", file=d)
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


def read_days(root: str, start_day: str, end_day: str, spec: FeatureSpec, *, validate: bool = True,
              include_paths: bool = False, allow_missing_days: bool = False, datasource_v2: bool = False,
              **read_parquet_args):
    """A ray.data.Dataset of the spec's columns for the days in [start_day, end_day].

    validate: footer checks of every file first (pipeline/validation.py), so a bad file fails
        here with its name rather than deep inside a Ray task.
    include_paths: keep Ray's per-row `path` column so that value errors found in a batch name
        the file directly. Off by default: Ray stores the full path string on every row of every
        block; iter_ray_batches(files=...) finds the file on the (rare) failure path instead.
    datasource_v2: use Ray 2.60's new Parquet datasource (its default). Off here because, as
        measured on this pipeline (tests/test_data_memory.py, benchmarks/bench_reader.py), V2
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
    return read_parquet_files(files, spec.columns(), dictionary_columns(spec), include_paths=include_paths,
                              datasource_v2=datasource_v2, **read_parquet_args)


def read_parquet_files(files: list[str], columns: list[str], as_dictionary: list[str] = (), *,
                       datasource_v2: bool = False, block_bytes: int = 32 << 20, **read_parquet_args):
    """ray.data.read_parquet of exactly these files and columns, with Ray's V1 Parquet
    datasource unless datasource_v2 (see read_days for why), and no partition columns: callers
    choose days by the file list. Shared by training (read_days) and scoring (pipeline/scoring.py).

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
        return ray.data.read_parquet(files, columns=columns, partitioning=None,
                                     schema=dictionary_read_schema(files[0], columns, as_dictionary),
                                     **read_parquet_args)
    finally:
        ctx.use_datasource_v2, ctx.target_max_block_size = previous


def iter_ray_batches(data, spec: FeatureSpec, batch_size: int, *, files: Optional[list[str]] = None,
                     drop_last: bool = False, prefetch_blocks: int = 2,
                     local_shuffle_rows: int = 0,
                     local_shuffle_seed: Optional[int] = None) -> Iterator[Batch]:
    """Batches from a ray.data.Dataset, a DataIterator, or (inside a Ray Train worker) the
    name of a dataset passed to the trainer, e.g. "train".

    files: the files behind `data` (list_day_files). Only used when a batch fails validation
        and does not say which file it came from: the files are then scanned without Ray to
        name the bad one. For a ray.data.Dataset they default to its input files.
    """
    if isinstance(data, str):
        import ray.train

        shard = ray.train.get_dataset_shard(data)
        if shard is None:
            raise ValueError(f"no dataset named '{data}' was passed to the trainer")
        data = shard
    # Whole blocks from Ray, cut into batches here (pipeline/rebatch.py says why); with
    # batch_size=None, Ray's prefetch_batches counts blocks.
    blocks = data.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=prefetch_blocks)
    for table in rebatched(blocks, batch_size, drop_last=drop_last, shuffle_rows=local_shuffle_rows,
                           seed=local_shuffle_seed):
        try:
            batch = collate(table, spec)
        except DataValidationError as e:
            if e.file is None and files is None and hasattr(data, "input_files"):
                files = data.input_files()
            located = find_bad_file(files, spec) if e.file is None and files else None
            raise (located or e) from None
        yield batch


def find_bad_file(files: list[str], spec: FeatureSpec, batch_size: int = 65536) -> Optional[DataValidationError]:
    """Deep validation: every value of every file through the collate, without Ray. Returns the
    first error (naming its file), or None. Slow path, for errors and for `jobs`-level checks."""
    try:
        for _ in iter_file_batches(files, spec, batch_size):
            pass
    except DataValidationError as e:
        return e
    return None


def iter_file_batches(files: Union[str, list[str]], spec: FeatureSpec, batch_size: int, *,
                      validate: bool = True) -> Iterator[Batch]:
    """Batches straight from Parquet files with pyarrow (no Ray): scoring and local runs.
    Each batch is collated with the file it came from, so errors name it."""
    files = [files] if isinstance(files, str) else list(files)
    if validate:
        files = validate_files(files, spec).files
    if not files:
        return
    # One file at a time, one row group's worth of batches at a time: memory stays flat however
    # many files and rows the range holds (a multi-file pyarrow.dataset scanner's readahead
    # was measured to grow with the number of files). The next batch is decoded in a thread
    # while this one is collated: pyarrow releases the GIL while it decodes.
    for path, record_batch in _decoded_ahead(_record_batches(files, spec, batch_size)):
        yield collate(record_batch, spec, source=path)


def _record_batches(files: list[str], spec: FeatureSpec, batch_size: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    as_dictionary = dictionary_columns(spec)
    for path in files:
        parquet = pq.ParquetFile(path, read_dictionary=as_dictionary)
        for record_batch in parquet.iter_batches(batch_size=batch_size, columns=spec.columns()):
            if record_batch.num_rows:
                yield path, record_batch


def _decoded_ahead(items: Iterator) -> Iterator:
    """`items`, each produced in a worker thread while the caller works on the previous one:
    one item ahead, so memory holds at most two. Errors surface at the item that raised."""
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-decode") as pool:
        ahead = pool.submit(next, items, done)
        while (item := ahead.result()) is not done:
            ahead = pool.submit(next, items, done)
            yield item
