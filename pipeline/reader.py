"""Streaming reader: day-partitioned Parquet -> Ray Data -> Batch (KJT + dense + labels).

Layout: <root>/dt=YYYY-MM-DD/part-*.parquet. Only the dt=... directories inside the requested
day range are listed (partition pruning by construction), and the resulting file list goes to
ray.data.read_parquet, so days outside the range are never opened. Files whose names start
with '.' or '_' (writers' temp files, _SUCCESS markers) are ignored.

Inside a Ray Train worker pass the dataset's name ("train"): the worker's shard comes from
ray.train.get_dataset_shard. Outside Ray Train pass the ray.data.Dataset itself. Without Ray at
all (scoring, tests), `iter_file_batches` streams the same files with pyarrow.dataset and the
same collate.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Iterator, Optional, Union

import pyarrow.dataset as pads

from pipeline.batch import Batch
from pipeline.collate import PATH_COLUMN, collate
from pipeline.feature_spec import FeatureSpec
from pipeline.validation import DataValidationError, validate_files


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


def read_days(root: str, start_day: str, end_day: str, spec: FeatureSpec, *, validate: bool = True,
              include_paths: bool = True, allow_missing_days: bool = False, **read_parquet_args):
    """A ray.data.Dataset of the spec's columns for the days in [start_day, end_day].

    validate: footer checks of every file first (pipeline/validation.py), so a bad file fails
        here with its name rather than deep inside a Ray task.
    include_paths: keep Ray's per-row `path` column so that value errors found in a batch can
        name the file.
    """
    import ray

    files = list_day_files(root, start_day, end_day, allow_missing_days)
    if validate:
        files = validate_files(files, spec).files
        if not files:
            raise DataValidationError(f"all files for days {start_day}..{end_day} are empty", file=root)
    # partitioning=None: the day is already chosen by the file list, no `dt` column is needed.
    ds = ray.data.read_parquet(files, include_paths=include_paths, partitioning=None, **read_parquet_args)
    return ds.select_columns(spec.columns() + ([PATH_COLUMN] if include_paths else []))


def iter_ray_batches(data, spec: FeatureSpec, batch_size: int, *, drop_last: bool = False,
                     prefetch_batches: int = 2, local_shuffle_buffer_size: Optional[int] = None,
                     local_shuffle_seed: Optional[int] = None) -> Iterator[Batch]:
    """Batches from a ray.data.Dataset, a DataIterator, or (inside a Ray Train worker) the
    name of a dataset passed to the trainer, e.g. "train"."""
    if isinstance(data, str):
        import ray.train

        shard = ray.train.get_dataset_shard(data)
        if shard is None:
            raise ValueError(f"no dataset named '{data}' was passed to the trainer")
        data = shard
    for table in data.iter_batches(batch_size=batch_size, batch_format="pyarrow", drop_last=drop_last,
                                   prefetch_batches=prefetch_batches,
                                   local_shuffle_buffer_size=local_shuffle_buffer_size,
                                   local_shuffle_seed=local_shuffle_seed):
        yield collate(table, spec)


def iter_file_batches(files: Union[str, list[str]], spec: FeatureSpec, batch_size: int, *,
                      validate: bool = True) -> Iterator[Batch]:
    """Batches straight from Parquet files with pyarrow (no Ray): scoring and local runs.
    Each batch is collated with the file it came from, so errors name it."""
    files = [files] if isinstance(files, str) else list(files)
    if validate:
        files = validate_files(files, spec).files
    if not files:
        return
    # One scanner over all files: pyarrow reads ahead and decodes in parallel; each tagged batch
    # knows its fragment, i.e. its file. Batches never span files, so they can be short at the
    # end of a file.
    scanner = pads.dataset(files, format="parquet").scanner(columns=spec.columns(), batch_size=batch_size)
    for tagged in scanner.scan_batches():
        if tagged.record_batch.num_rows:
            yield collate(tagged.record_batch, spec, source=tagged.fragment.path)
