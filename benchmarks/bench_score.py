"""Scoring job throughput against the model's own forward pass, and actor memory as input grows.

    python benchmarks/bench_score.py                          # N = 1M rows in 250k-row files, 10N
    python benchmarks/bench_score.py --rows 400000 --rows-per-file 25000   # many tiny files
    python benchmarks/bench_score.py --num-actors 8 --cpus-per-actor 1 --torch-threads 1
    python benchmarks/bench_score.py --allocator system       # glibc's malloc, actors and baseline
    python benchmarks/bench_score.py --actor-memory 1,4 --user-rows 8000000 --rows 200000
                                                              # node memory: 4 actors vs 1 mapping one model
    python benchmarks/bench_score.py --actor-memory 1,4 --user-rows 8000000 --rows 200000 --managed
                                                              # the same with managed-id mappings

Generates synthetic logs of N rows and of scale*N rows (same rows per file, scale times the
files), exports a randomly initialised model (or uses --model), then prints, in one run:
  forward only        RecModel forward on in-memory, already collated batches of the N rows,
                      with as many torch threads as all actors together (num_actors * torch_threads),
                      in a fresh process with the actors' allocator (--allocator, jemalloc by default)
  collate + forward   the same from Arrow tables (no Ray): the actors' work
  job N / job scale*N the scoring job (Ray Data read -> Scorer actors -> per-file commit):
                      end-to-end rows/s (start-up included) and steady rows/s (after the first batch)
and the ratios job/forward (target >= 0.7, steady state) and peak memory per actor at scale*N
vs N (target: flat, ratio ~1.0): the actor's private memory (RssAnon, sampled after every
batch). Its RSS high-water mark is printed too, with the part of it that is Ray's shared
object store (RssShmem): the pages of the node's fixed object_store_memory the actor has
mapped, more of them as more blocks pass through it (up to that budget), not memory the actor
holds. Ray never drops them from a reader's page table (ray-project/ray#53261, #62854): with
250k-row files they grew ~100 MB per 1M rows read.

Private memory, measured 2026-11-29 (2 cores, 1 actor, N = 1M rows):
  jemalloc (default)     N 451-452 MB, 10N 456 MB: ratio 1.01, 1.01 (2 runs); --scale 30: N 450
                         MB, 30N 464 MB, ratio 1.03 (steady throughput 0.76)
  --allocator system     ratio 1.06-1.63 over 5 runs: glibc's arena fragments (pipeline/score/allocator.py)

Files of 250k rows (~14 MB of Parquet, ~25 MB in memory) by default: per-file costs (a read
task, an output file and a manifest update each) dominate tiny files. Steady job/forward-only
at 10N, 1 actor: 0.77-0.80 with jemalloc on both sides (2 runs; forward-only 274-284k rows/s);
0.76-0.88 with glibc on both (5 runs); 25k-row files 0.66-0.77 (glibc). What remains on 2
cores is mostly contention: the forward ran 15% slower per row in the actor than alone (4.8
vs 4.1 us of CPU), as the other core reads and writes Parquet (the same forward lost 40% next
to a matmul on the other core, 0-6% next to a pure-Python loop).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))  # helpers
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import pyarrow.parquet as pq
import torch

from helpers.scoring_data import random_export
from pipeline.common.logs import configure_logs
from pipeline.data.collate import collate
from pipeline.data.synthetic import write_file
from pipeline.score.allocator import jemalloc_env, prepare_allocator
from pipeline.score.config import ScoreConfig
from pipeline.score.run import score
from pipeline.train.export import load_export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(root: str, rows: int, rows_per_file: int) -> list[str]:
    files = []
    for i in range(max(1, rows // rows_per_file)):
        path = os.path.join(root, "dt=2026-01-01", f"part-{i:05d}.parquet")
        write_file(path, rows_per_file, seed=0, day_index=0, file_index=i)
        files.append(path)
    return files


def make_export(path: str, user_rows: int | None = None, managed: bool = False) -> str:
    """A randomly initialised export of the demo's model; `user_rows`: its user table hashed
    into that many rows instead (a model of a larger size, for --actor-memory); `managed`: the
    user and item tables managed (synthetic_managed.yaml), each with its id mapping."""
    spec_file = "synthetic_managed.yaml" if managed else "synthetic.yaml"
    return random_export(path, spec_file=spec_file, rows={"user": user_rows} if user_rows else None)


def export_mb(model_dir: str) -> float:
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*.safetensors")) / 2**20


def forward_only_with(
    allocator: str, model_dir: str, files: list[str], batch_size: int, threads: int, ab: bool = False
) -> tuple[float, float]:
    """forward_only (or with `ab` mapped_vs_copied) in a fresh process with the scoring actors'
    allocator (jemalloc is preloaded at start-up, so it cannot be switched on in this one): both
    sides allocate alike."""
    env = {**os.environ, **(jemalloc_env() if allocator == "jemalloc" else {})}
    args = [
        sys.executable,
        os.path.abspath(__file__),
        "--baseline-of",
        model_dir,
        "ab" if ab else "forward",
        str(batch_size),
        str(threads),
        *files,
    ]
    out = subprocess.run(args, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def mapped_vs_copied(model_dir: str, files: list[str], batch_size: int, threads: int) -> tuple[float, float]:
    """Forward-only rows/s of the export as load_export maps it, and of a private copy of it (as
    exports were loaded before they were mapped), timed in turn, best of 5 passes each (the first
    pass touches every page both ways)."""
    import copy

    torch.set_num_threads(threads)
    prepare_allocator()
    mapped, spec, _ = load_export(model_dir)
    models = {"mapped": mapped, "copied": copy.deepcopy(mapped)}  # deepcopy clones every tensor
    batches = [collate(t, spec, with_labels=False) for f in files for t in pq.ParquetFile(f).iter_batches(batch_size)]
    rows = sum(len(b) for b in batches)
    best = dict.fromkeys(models, 0.0)
    with torch.inference_mode():
        for _ in range(5):
            for name, model in models.items():
                start = time.perf_counter()
                for b in batches:
                    model(*_inputs(b))
                best[name] = max(best[name], rows / (time.perf_counter() - start))
    return best["mapped"], best["copied"]


def forward_only(model_dir: str, files: list[str], batch_size: int, threads: int) -> tuple[float, float]:
    """(forward-only rows/s on collated in-memory batches, collate+forward rows/s)."""
    torch.set_num_threads(threads)
    prepare_allocator()  # as the scoring actors do: the same allocator settings on both sides
    model, spec, _ = load_export(model_dir)
    tables = [b for f in files for b in pq.ParquetFile(f).iter_batches(batch_size=batch_size)]
    rows = sum(t.num_rows for t in tables)
    # Best of 3: on a shared machine a single pass measures the neighbours as much as the model;
    # taking the best baseline makes the job/forward ratio conservative.
    fwd = both = 0.0
    with torch.inference_mode():
        for b in tables[:3]:  # warm-up
            model(*_inputs(collate(b, spec, with_labels=False)))
        for _ in range(3):
            start = time.perf_counter()
            batches = [collate(t, spec, with_labels=False) for t in tables]
            for b in batches:
                torch.sigmoid(model(*_inputs(b)))
            both = max(both, rows / (time.perf_counter() - start))
            start = time.perf_counter()
            for b in batches:
                torch.sigmoid(model(*_inputs(b)))
            fwd = max(fwd, rows / (time.perf_counter() - start))
    return fwd, both


def _inputs(b):
    return b.sparse_features, b.dense_features


def run_job(model_dir: str, data: str, out: str, cfg: ScoreConfig):
    shutil.rmtree(out, ignore_errors=True)
    summary = score(model_dir, data, out, cfg, log=lambda m: None)
    peak = max(a["peak_rss_mb"] for a in summary.actors)
    anon = max(a["peak_anon_mb"] for a in summary.actors)
    shmem = max(a["peak_shmem_mb"] for a in summary.actors)
    allocators = "/".join(sorted({a["allocator"] for a in summary.actors}))
    # Share of the job's wall time the actors spent scoring (start-up included, so a lower bound
    # of their steady-state share; the steady rows/s ratio is the figure to judge).
    busy = sum(a["busy_s"] for a in summary.actors) / (len(summary.actors) * summary.seconds)
    print(
        f"{'job ' + format(summary.rows_scored, ','):<34} {summary.rows_per_s:>12,.0f} rows/s end to end "
        f"({summary.seconds:.1f} s, first batch back at {summary.first_output_s:.1f} s), "
        f"{summary.steady_rows_per_s:>10,.0f} rows/s steady; {len(summary.actors)} actors, "
        f"{allocators} malloc, busy {busy:.0%} of the job; peak per actor: private {anon:.0f} MB, RSS {peak:.0f} MB "
        f"(object-store pages {shmem:.0f} MB)",
        flush=True,
    )
    return summary, peak, anon, shmem


def actor_memory(args, work: str, counts: list[int]) -> None:
    """Node memory of scoring with 1 and with more actors on this node, next to the model's
    size: each actor maps the export read-only, so only its own activations are private."""
    data = os.path.join(work, "small")
    files = make_data(data, args.rows, args.rows_per_file)
    model_dir = args.model or make_export(os.path.join(work, "export"), args.user_rows, args.managed)
    model_mb = export_mb(model_dir)
    mapping_mb = sum(p.stat().st_size for p in Path(model_dir).glob("managed/*.safetensors")) / 2**20
    print(
        f"model: {model_mb:.0f} MB of safetensors files ({mapping_mb:.0f} MB of them managed-id mappings); "
        f"data: {args.rows:,} rows; {os.cpu_count()} CPUs",
        flush=True,
    )
    mapped, copied = forward_only_with(args.allocator, model_dir, files, args.batch_size, args.torch_threads, ab=True)
    print(
        f"forward only, {args.torch_threads} thread(s), in turn in one process: {mapped:,.0f} rows/s with the mapped "
        f"model, {copied:,.0f} rows/s with a private copy: ratio {mapped / copied:.2f} (target >= 1.0 within noise)",
        flush=True,
    )
    node = {}
    for n in counts:
        cfg = ScoreConfig(
            batch_size=args.batch_size,
            num_actors=n,
            cpus_per_actor=min(1.0, (os.cpu_count() or 2) / (2 * n)),  # half the CPUs: the rest reads
            torch_threads=args.torch_threads,
            local_num_cpus=args.num_cpus,
            actor_allocator=args.allocator,
            progress_every_s=3600,
        )
        summary, *_ = run_job(model_dir, data, os.path.join(work, f"out_{n}"), cfg)
        private = sum(a["peak_anon_mb"] for a in summary.actors)
        by_model = max(a["model_private_mb"] for a in summary.actors)
        # The mapped model's pages are the page cache's: counted once on the node, however many map them.
        node[n] = private + model_mb
        print(
            f"{n} actors: summed private memory {private:,.0f} MB ({private / n:,.0f} per actor, of which loading "
            f"the model added at most {by_model:,.0f} MB); node memory "
            f"{node[n]:,.0f} MB with the model once (a copy per actor would be {private + n * model_mb:,.0f} MB); "
            f"{summary.steady_rows_per_s:,.0f} rows/s steady",
            flush=True,
        )
    lo, hi = min(counts), max(counts)
    print(
        f"\nnode memory {hi} actors / {lo} actor: {node[hi] / node[lo]:.2f} (model {model_mb:.0f} MB; a copy per "
        f"actor would give {(node[hi] + (hi - 1) * model_mb) / node[lo]:.2f})"
    )


def _object_store_mb() -> float:
    import ray

    return ray.cluster_resources().get("object_store_memory", 0) / 2**20 if ray.is_initialized() else float("nan")


def main():
    if sys.argv[1:2] == ["--baseline-of"]:  # the child process of forward_only_with
        model_dir, how, batch_size, threads, *files = sys.argv[2:]
        measure = mapped_vs_copied if how == "ab" else forward_only
        print(json.dumps(measure(model_dir, files, int(batch_size), int(threads))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 1M rows: at ~200k rows/s the steady-state window of the small input lasts ~4 s.
    p.add_argument("--rows", type=int, default=1_000_000, help="N: rows of the small input")
    p.add_argument("--scale", type=int, default=10, help="the large input has scale * N rows")
    p.add_argument("--rows-per-file", type=int, default=250_000)
    p.add_argument("--batch-size", type=int, default=8192)
    # One core per actor (its torch thread) and as many left for Ray Data's reads and the driver.
    p.add_argument("--num-actors", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--torch-threads", type=int, default=1, help="per actor")
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray cluster")
    p.add_argument(
        "--allocator",
        choices=["jemalloc", "system"],
        default=ScoreConfig().actor_allocator,
        help="the actors' malloc (ScoreConfig.actor_allocator); the baseline uses the same",
    )
    p.add_argument("--model", default=None, help="export directory (default: a random-init export)")
    p.add_argument("--workdir", default=None, help="where data and outputs go (default: a temp dir)")
    p.add_argument(
        "--actor-memory",
        default=None,
        help="e.g. 1,4: node memory of the job with that many actors, instead of the N / scale*N runs",
    )
    p.add_argument("--user-rows", type=int, default=None, help="the random export's user table rows (model size)")
    p.add_argument("--managed", action="store_true", help="the random export's user and item tables managed")
    args = p.parse_args()

    work = args.workdir or tempfile.mkdtemp(prefix="bench_score_")
    configure_logs(Path(work, "driver.log"))  # as the jobs: library logs to a file, not the console
    if args.actor_memory:
        actor_memory(args, work, [int(n) for n in args.actor_memory.split(",")])
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        return
    small, large = os.path.join(work, "small"), os.path.join(work, "large")
    t0 = time.perf_counter()
    small_files = make_data(small, args.rows, args.rows_per_file)
    make_data(large, args.rows * args.scale, args.rows_per_file)
    model_dir = args.model or make_export(os.path.join(work, "export"), managed=args.managed)
    print(
        f"data: {args.rows:,} and {args.rows * args.scale:,} rows ({args.rows_per_file:,} per file) in "
        f"{time.perf_counter() - t0:.0f} s under {work}; {os.cpu_count()} CPUs; batch {args.batch_size}; "
        f"{args.num_actors} actors x {args.cpus_per_actor} CPU, {args.torch_threads} torch threads",
        flush=True,
    )

    threads = args.num_actors * args.torch_threads
    fwd, both = forward_only_with(args.allocator, model_dir, small_files, args.batch_size, threads)
    print(
        f"{'forward only, ' + str(threads) + ' threads':<34} {fwd:>12,.0f} rows/s (in-memory collated batches, "
        f"{args.allocator} malloc)"
    )
    print(
        f"{'collate + forward, ' + str(threads) + ' threads':<34} {both:>12,.0f} rows/s (in process, no Ray)",
        flush=True,
    )

    cfg = ScoreConfig(
        batch_size=args.batch_size,
        num_actors=args.num_actors,
        cpus_per_actor=args.cpus_per_actor,
        torch_threads=args.torch_threads,
        gpus_per_actor=args.gpus_per_actor,
        local_num_cpus=args.num_cpus,
        actor_allocator=args.allocator,
        progress_every_s=3600,
    )
    s_small, peak_small, anon_small, shm_small = run_job(model_dir, small, os.path.join(work, "out_small"), cfg)
    s_large, peak_large, anon_large, shm_large = run_job(model_dir, large, os.path.join(work, "out_large"), cfg)

    object_store_mb = _object_store_mb()
    print(
        f"\njob / forward-only rows/s, steady:     N {s_small.steady_rows_per_s / fwd:.2f}   "
        f"{args.scale}N {s_large.steady_rows_per_s / fwd:.2f}   (target >= 0.7)"
    )
    print(
        f"job / forward-only rows/s, end to end: N {s_small.rows_per_s / fwd:.2f}   "
        f"{args.scale}N {s_large.rows_per_s / fwd:.2f}   (start-up included)"
    )
    print(
        f"peak private memory per actor: N {anon_small:.0f} MB, {args.scale}N {anon_large:.0f} MB, "
        f"ratio {anon_large / anon_small:.2f} (target: flat, ~1.0)"
    )
    print(
        f"peak RSS per actor: N {peak_small:.0f} MB, {args.scale}N {peak_large:.0f} MB, "
        f"ratio {peak_large / peak_small:.2f}; of it shared object-store pages: N {shm_small:.0f} MB, "
        f"{args.scale}N {shm_large:.0f} MB (object store {object_store_mb:.0f} MB)"
    )
    print(f"driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
