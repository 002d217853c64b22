"""Reader throughput: rows/s of the Ray Data reader producing KJT Batches, against a plain
pyarrow.dataset scan of the same files and columns (the decode limit of this machine).

    python benchmarks/bench_reader.py                  # 16M rows: 2 days x 8 files of 1M rows (~56 MB)
    python benchmarks/bench_reader.py --rows 2000000 --batch-size 8192

Generates synthetic data (unless --data points at existing files), then times, in one run:
  pyarrow scan     pyarrow.dataset(files).to_batches(columns=spec columns), nothing else
  pyarrow scan dict  the same, string id columns decoded as dictionaries as the readers do
                   (shown so that the readers' own cost is visible without that head start)
  reader local     iter_file_batches: pyarrow per-file streaming (decoding one batch ahead in a
                   thread) + collate, no Ray: the retrain gate, the quality report, deep checks
  reader Ray       read_days + iter_ray_batches: Ray Data streaming + collate, as in training
  reader Ray+paths the same with include_paths=True (files named directly in value errors)
  reader Ray, Ray's delays  reader Ray with Ray Data's own scheduling delays, which
                   pipeline/common/ray_data_tuning.py shortens (shown to measure what that buys)
and prints rows/s and the ratio reader/scan (target >= 0.5), for the whole run and for the
steady state after the first batch.

Where the Ray reader's time goes on a 2-core machine (measured 2026-11, Ray 2.60):
- Decode: string ids are read straight into dictionaries (read_dictionary): 102 ns/row in a
  read task, against 160 when a read schema asks for dictionaries (decode, then re-encode).
- Batching: Ray's iter_batches(batch_size=...) cost as much as the collate; whole blocks cut
  by pipeline/data/rebatch.py made the consumer 60% faster (8.4M -> 13.6M rows/s, materialised data).
- Scheduling: with Ray's own delays the read tasks ran one at a time (ray.timeline()), as the
  executor noticed a finished task up to 0.1 s late and saw no cluster resources for the first
  second of each execution; pipeline/common/ray_data_tuning.py shortens both (this benchmark, 9 runs:
  Ray reader 0.54-0.67 of the scan over the whole run; 0.48-0.64 with Ray's own delays in 8 of
  them). What is left is the consumer: the collate in one thread, ~7M rows/s steady.
- Switching off Ray Data's per-operator reservation (DataContext.op_resource_reservation_enabled)
  hid the same delays (0.62 whole run, 0.78 steady state with Ray's delays), but in training
  (benchmarks/bench_train.py) each epoch's first step then waited 2-4 s instead of 1-2 s, and in
  scoring an actor's peak RSS doubled from N to 10N rows; it stays on.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import pyarrow.dataset as pads

from pipeline.common.ray_data_tuning import stock_delays
from pipeline.data.feature_spec import load_spec
from pipeline.data.files import dictionary_columns, list_day_files, read_days
from pipeline.data.reader import iter_file_batches, iter_ray_batches
from pipeline.data.synthetic import DEFAULT_START_DAY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(label, batches):
    """rows/s over the whole run, and after the first batch (steady state: excludes start-up,
    i.e. Ray Data planning and launching read tasks, paid once per epoch)."""
    start = time.perf_counter()
    rows, first_at, first_rows = 0, None, 0
    for n in batches:
        rows += n
        if first_at is None:
            first_at, first_rows = time.perf_counter(), rows
    end = time.perf_counter()
    if first_at is None:
        raise SystemExit(f"{label}: no batches")
    total = rows / (end - start)
    steady = (rows - first_rows) / (end - first_at) if end > first_at else float("nan")
    print(
        f"{label:<25} {rows:>10,} rows {end - start:7.2f} s  {total:>12,.0f} rows/s"
        f"   first batch after {first_at - start:5.2f} s, then {steady:>12,.0f} rows/s",
        flush=True,
    )
    return total, steady


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=16_000_000)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--files-per-day", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--data", help="existing dataset root (dt=... dirs) instead of generating")
    p.add_argument("--start-day", default=DEFAULT_START_DAY)
    p.add_argument("--end-day", default=None)
    p.add_argument("--spec", default=os.path.join(REPO, "configs", "features", "synthetic.yaml"))
    p.add_argument("--num-cpus", type=int, default=None)
    args = p.parse_args()

    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    spec = load_spec(args.spec)
    tmp = None
    root = args.data
    if root is None:
        from pipeline.data.synthetic import day_names, generate_dataset

        tmp = tempfile.TemporaryDirectory(prefix="bench_reader_")
        root = tmp.name
        t = time.perf_counter()
        generate_dataset(root, args.rows, args.days, args.files_per_day, seed=0, start_day=args.start_day)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        end_day = day_names(args.start_day, args.days)[-1]
    else:
        end_day = args.end_day or args.start_day
    files = list_day_files(root, args.start_day, end_day)
    print(
        f"{len(files)} files, batch_size {args.batch_size}, spec {spec.name}, "
        f"{len(spec.sparse)} sparse / {spec.num_dense} dense / {len(spec.tasks)} tasks"
    )

    def scan(dictionaries=()):
        fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=list(dictionaries)))
        ds = pads.dataset(files, format=fmt)
        return (b.num_rows for b in ds.to_batches(columns=spec.columns(), batch_size=args.batch_size))

    def local_reader():
        return (len(b) for b in iter_file_batches(files, spec, args.batch_size))

    def ray_reader(include_paths):
        ds = read_days(root, args.start_day, end_day, spec, include_paths=include_paths)
        return (len(b) for b in iter_ray_batches(ds, spec, args.batch_size))

    # Untimed warm-up: the page cache (for the scan) and Ray's worker processes (for the reader).
    sum(scan())
    sum(ray_reader(False))
    scan_total, scan_steady = timed("pyarrow scan", scan())
    dict_total, _ = timed("pyarrow scan dict", scan(dictionary_columns(spec)))
    local_total, local_steady = timed("reader local (no Ray)", local_reader())
    ray_total, ray_steady = timed("reader Ray", ray_reader(False))
    paths_total, paths_steady = timed("reader Ray +paths", ray_reader(True))
    with stock_delays():
        stock_total, stock_steady = timed("reader Ray, Ray's delays", ray_reader(False))
    print(
        f"ratio reader/scan, whole run:    Ray {ray_total / scan_total:.2f}   local {local_total / scan_total:.2f}"
        f"   Ray+paths {paths_total / scan_total:.2f}   (target >= 0.5)"
    )
    print(f"ratio reader/scan dict, whole run: Ray {ray_total / dict_total:.2f}   local {local_total / dict_total:.2f}")
    print(
        f"ratio reader/scan, steady state: Ray {ray_steady / scan_steady:.2f}   local {local_steady / scan_steady:.2f}"
        f"   Ray+paths {paths_steady / scan_steady:.2f}"
    )
    print(
        f"with Ray Data's own scheduling delays: Ray {stock_total / scan_total:.2f} whole run, "
        f"{stock_steady / scan_steady:.2f} steady state"
    )
    ray.shutdown()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
