"""Streaming reader: Ray Data blocks or Parquet files -> Batch (KJT + dense + labels).

Inside a Ray Train worker pass the dataset's name ("train"): the worker's shard comes from
ray.train.get_dataset_shard. Outside Ray Train pass the ray.data.Dataset itself (made by
`pipeline/data/files.py` read_days). Without Ray at all (scoring, tests), `iter_file_batches`
streams the same files with pyarrow and the same collate.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.batch import Batch
from pipeline.data.collate import collate
from pipeline.data.feature_spec import FeatureSpec
from pipeline.data.files import dictionary_columns
from pipeline.data.rebatch import rebatched
from pipeline.data.validation import DataValidationError, validate_files


def iter_ray_batches(
    data,
    spec: FeatureSpec,
    batch_size: int,
    *,
    files: list[str] | None = None,
    drop_last: bool = False,
    prefetch_blocks: int = 2,
    local_shuffle_rows: int = 0,
    local_shuffle_seed: int | None = None,
) -> Iterator[Batch]:
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
    # Whole blocks from Ray, cut into batches here (pipeline/data/rebatch.py says why); with
    # batch_size=None, Ray's prefetch_batches counts blocks.
    blocks = data.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=prefetch_blocks)
    for table in rebatched(
        blocks, batch_size, drop_last=drop_last, shuffle_rows=local_shuffle_rows, seed=local_shuffle_seed
    ):
        try:
            batch = collate(table, spec)
        except DataValidationError as e:
            if e.file is None and files is None and hasattr(data, "input_files"):
                files = data.input_files()
            located = find_bad_file(files, spec) if e.file is None and files else None
            raise (located or e) from None
        yield batch


def find_bad_file(files: list[str], spec: FeatureSpec, batch_size: int = 65536) -> DataValidationError | None:
    """Deep validation: every value of every file through the collate, without Ray. Returns the
    first error (naming its file), or None. Slow path, for errors and for `jobs`-level checks."""
    try:
        for _ in iter_file_batches(files, spec, batch_size):
            pass
    except DataValidationError as e:
        return e
    return None


def iter_file_batches(
    files: str | list[str], spec: FeatureSpec, batch_size: int, *, validate: bool = True, max_rows: int | None = None
) -> Iterator[Batch]:
    """Batches straight from Parquet files with pyarrow (no Ray): scoring, evaluation and local
    runs; the first `max_rows` rows only, in file order, where given. Each batch is collated
    with the file it came from, so errors name it."""
    for path, record_batch in iter_record_batches(files, spec, batch_size, validate=validate, max_rows=max_rows):
        yield collate(record_batch, spec, source=path)


def iter_record_batches(
    files: str | list[str],
    spec: FeatureSpec,
    batch_size: int,
    *,
    validate: bool = True,
    max_rows: int | None = None,
    extra_columns: Sequence[str] = (),
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(file, Arrow batch of the spec's columns and `extra_columns`) as iter_file_batches reads
    them, before the collate: for callers that change the rows first or read columns the model
    does not (pipeline/score/importance.py, pipeline/score/evaluate.py's slices)."""
    files = [files] if isinstance(files, str) else list(files)
    if validate:
        files = validate_files(files, spec).files
    if not files:
        return
    left = max_rows
    # One file at a time, one row group's worth of batches at a time: memory stays flat however
    # many files and rows the range holds (a multi-file pyarrow.dataset scanner's readahead
    # was measured to grow with the number of files). The next batch is decoded in a thread
    # while this one is collated: pyarrow releases the GIL while it decodes.
    columns = list(dict.fromkeys([*spec.columns(), *extra_columns]))
    for path, record_batch in _decoded_ahead(_record_batches(files, spec, batch_size, columns)):
        if left is not None:
            if left <= 0:
                return
            record_batch = record_batch.slice(0, left)
            left -= record_batch.num_rows
        yield path, record_batch


def _record_batches(
    files: list[str], spec: FeatureSpec, batch_size: int, columns: list[str]
) -> Iterator[tuple[str, pa.RecordBatch]]:
    as_dictionary = dictionary_columns(spec)
    for path in files:
        parquet = pq.ParquetFile(path, read_dictionary=as_dictionary)
        for record_batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
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
