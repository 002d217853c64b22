"""Reader throughput: rows/s of the Ray Data reader producing KJT Batches, against a plain
pyarrow.dataset scan of the same files and columns (the decode limit of this machine).

    python benchmarks/bench_reader.py --rows 2000000 --batch-size 8192

Generates synthetic data (unless --data points at existing files), then times, in one run:
  pyarrow scan     pyarrow.dataset(files).to_batches(columns=spec columns), nothing else
  reader (local)   iter_file_batches: same scan + collate (no Ray)
  reader (Ray)     read_days + iter_ray_batches: Ray Data streaming + collate, as in training
and prints rows/s and the ratio reader/scan (target >= 0.5).
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import pyarrow.dataset as pads  # noqa: E402

from pipeline.feature_spec import load_spec  # noqa: E402
from pipeline.reader import iter_file_batches, iter_ray_batches, list_day_files, read_days  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(label, rows_fn):
    start = time.perf_counter()
    rows = rows_fn()
    took = time.perf_counter() - start
    print(f"{label:<16} {rows:>10,} rows  {took:7.2f} s  {rows / took:>12,.0f} rows/s", flush=True)
    return rows / took


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--files-per-day", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--data", help="existing dataset root (dt=... dirs) instead of generating")
    p.add_argument("--start-day", default="2024-01-01")
    p.add_argument("--end-day", default=None)
    p.add_argument("--spec", default=os.path.join(REPO, "configs", "synthetic.yaml"))
    p.add_argument("--num-cpus", type=int, default=None)
    args = p.parse_args()

    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    spec = load_spec(args.spec)
    tmp = None
    root = args.data
    if root is None:
        from pipeline.synthetic import day_names, generate_dataset

        tmp = tempfile.TemporaryDirectory(prefix="bench_reader_")
        root = tmp.name
        t = time.perf_counter()
        generate_dataset(root, args.rows, args.days, args.files_per_day, seed=0, start_day=args.start_day)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        end_day = day_names(args.start_day, args.days)[-1]
    else:
        end_day = args.end_day or args.start_day
    files = list_day_files(root, args.start_day, end_day)
    print(f"{len(files)} files, batch_size {args.batch_size}, spec {spec.name}, "
          f"{len(spec.sparse)} sparse / {spec.num_dense} dense / {len(spec.tasks)} tasks")

    def scan():
        ds = pads.dataset(files, format="parquet")
        return sum(b.num_rows for b in ds.to_batches(columns=spec.columns(), batch_size=args.batch_size))

    def local_reader():
        return sum(len(b) for b in iter_file_batches(files, spec, args.batch_size))

    def ray_reader():
        ds = read_days(root, args.start_day, end_day, spec)
        return sum(len(b) for b in iter_ray_batches(ds, spec, args.batch_size))

    scan()  # warm the page cache so that neither side pays for the first disk read
    scan_rate = timed("pyarrow scan", scan)
    local_rate = timed("reader (local)", local_reader)
    ray_rate = timed("reader (Ray)", ray_reader)
    print(f"ratio reader(local)/scan = {local_rate / scan_rate:.2f}")
    print(f"ratio reader(Ray)/scan   = {ray_rate / scan_rate:.2f}   (target >= 0.5)")
    ray.shutdown()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
