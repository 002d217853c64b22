"""Big tables in training: how rows/s, worker memory, checkpoints and the export grow with the
largest table.

    python benchmarks/bench_tables.py                          # user table of 1M, 10M, 30M rows, dim 32
    python benchmarks/bench_tables.py --sizes 1000000,3000000 --rows 100000
    python benchmarks/bench_tables.py --rounds 4               # the rows/s ratio per round, alternating

Trains the demo's model (configs/jobs/train_local.yaml, 2 CPU workers) with its user table
hashed into each size of rows at dim 32, one epoch of generated rows, with the real job's worker
code, then warm-starts a second short run from that checkpoint. Prints per size:
  rows/s        the job's steady rows/s (train/rows_per_s_steady)
  worker peak   the highest RSS high-water mark of the 2 workers, next to the bytes of that
                worker's shards plus their optimizer state (what the planner placed there)
  checkpoint    save (the final checkpoint: shards written, handed to Ray Train's storage) and
                load (the warm start's) seconds, slowest worker
  export        seconds and peak memory export_model adds in a fresh process (beyond its imports)
and, against the smallest size: rows/s ratio (target >= 0.8 at the largest) and the worker's
memory against 1.3 x (shards + optimizer state) + the fixed overhead measured at the smallest
size (its peak minus its shards). With --rounds N, the smallest and largest sizes are trained again
(training only), alternating, until there are N rows/s ratios: their spread (one ratio is one draw
of the machine's noise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from pipeline.common.logs import configure_logs  # noqa: E402
from pipeline.data.feature_spec import load_spec  # noqa: E402
from pipeline.train.config import load_config  # noqa: E402
from pipeline.train.launch import run_training  # noqa: E402
from pipeline.train.worker import WorkerTrainer  # noqa: E402

# VmHWM, the high-water mark of this process's own memory (ru_maxrss starts from the parent's
# RSS at fork: this benchmark's driver, which holds the Ray session).
EXPORT = """import sys, time, torch, safetensors.torch, ple_model, pipeline.train.checkpoint, pipeline.train.config
from pipeline.train.export import export_model
peak = lambda: int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1]) * 1024
base, start = peak(), time.perf_counter()
export_model(sys.argv[1], sys.argv[2])
print(time.perf_counter() - start, peak() - base)
"""


def local_bytes(obj) -> int:
    """Bytes of the tensors this rank holds in a (nested) state dict: a ShardedTensor's local
    shards, a plain tensor whole."""
    import torch
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    if isinstance(obj, ShardedTensor):
        return sum(s.tensor.numel() * s.tensor.element_size() for s in obj.local_shards())
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(local_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(local_bytes(v) for v in obj)
    return 0


class MeasuredTrainer(WorkerTrainer):
    """The job's worker, timing its checkpoint save and warm-start load and writing what it
    measured to <out>/rank-<r>.json when done."""

    early_first_batch = False
    out = ""

    def report(self, metrics: dict, with_checkpoint: bool, final: bool = False) -> None:
        start = time.perf_counter()
        super().report(metrics, with_checkpoint, final)
        if with_checkpoint:
            self.save_s = time.perf_counter() - start

    def _warm_start(self) -> None:
        start = time.perf_counter()
        super()._warm_start()
        self.load_s = time.perf_counter() - start

    def fit(self) -> None:
        super().fit()
        from pipeline.train.sharding import describe_plan

        with open("/proc/self/status") as f:  # VmHWM: this process's own high-water mark
            peak = int(next(x for x in f if x.startswith("VmHWM")).split()[1]) * 1024
        record = {
            "peak_rss": peak,
            "shards": local_bytes(self.sm.model.state_dict()),
            "optimizer": local_bytes(self.sm.optimizer.state_dict()["state"]),
            "save_s": getattr(self, "save_s", None),
            "load_s": getattr(self, "load_s", None) if self.cfg.train.init_from else None,
            "plan": describe_plan(self.sm.plan),
        }
        Path(self.out, f"rank-{self.rank}.json").write_text(json.dumps(record))


def measured_loop(loop_config: dict) -> None:
    from pipeline.data.feature_spec import spec_from_dict
    from pipeline.train.config import JobConfig
    from pipeline.train.worker import configure_worker_logs

    configure_worker_logs(loop_config, verbose=False)  # as the job's workers: library logs to files
    cfg = JobConfig.model_validate(loop_config["job"])
    MeasuredTrainer.out = str(Path(cfg.output_dir) / cfg.name)
    trainer = MeasuredTrainer(cfg, spec_from_dict(loop_config["spec"]), loop_config.get("files"))
    trainer.resume()
    trainer.fit()


def spec_with_user_rows(work: str, rows: int) -> str:
    """The demo's feature spec with its user table at `rows` x 32, as a file for the job."""
    spec = load_spec(Path(REPO, "configs/features/synthetic.yaml")).resized({"user": rows}, {"user": 32})
    path = Path(work, f"spec-{rows}.yaml")
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return str(path)


def train(work: str, rows: int, size: int, batch_size: int, name: str, *extra: str) -> tuple[dict, list[dict]]:
    cfg = load_config(
        Path(REPO, "configs/jobs/train_local.yaml"),
        [
            f"data.root={work}/data",
            f"data.spec={spec_with_user_rows(work, size)}",
            f"output_dir={work}/runs",
            f"name={name}",
            f"data.generate.rows={rows}",
            "train.epochs=1",
            f"train.batch_size={batch_size}",
            "train.checkpoint_every_steps=null",
            "train.eval_every_steps=null",
            "cluster.max_failures=0",
            *extra,
        ],
    )
    result = run_training(cfg, train_loop=measured_loop)
    ranks = [json.loads(p.read_text()) for p in sorted(Path(cfg.run_dir).glob("rank-*.json"))]
    return {**result.metrics, "checkpoint": result.checkpoint_dir}, ranks


def export_in_fresh_process(checkpoint: str, out: str, log: str) -> tuple[float, int]:
    """(seconds, peak bytes) of export_model in a fresh process; its library warnings go to `log`
    (the driver's log file), the console shows them only if the export fails."""
    proc = subprocess.run([sys.executable, "-c", EXPORT, checkpoint, out], capture_output=True, text=True, cwd=REPO)
    with open(log, "a") as f:
        f.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"the export of {checkpoint} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    seconds, peak = proc.stdout.split()[-2:]
    return float(seconds), int(peak)


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000,30000000", help="rows of the user table (dim 32)")
    p.add_argument("--rows", type=int, default=300_000, help="generated rows over 3 days (2 train, 1 val)")
    p.add_argument("--batch-size", type=int, default=1024, help="per worker")
    p.add_argument("--rounds", type=int, default=1, help="rows/s ratios of the largest to the smallest size")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-tables-")
    configure_logs(Path(work, "driver.log"))  # as the jobs: library logs to a file, not the console
    print(f"{os.cpu_count()} CPUs; {args.rows:,} generated rows, batch {args.batch_size} per worker, 2 workers")
    found = {}
    for size in sizes:
        m, ranks = train(work, args.rows, size, args.batch_size, f"t{size}")
        warm_start = [f"train.init_from={m['checkpoint']}", "train.max_steps=2"]
        _, warm = train(work, args.rows, size, args.batch_size, f"t{size}-warm", *warm_start)
        export_s, export_peak = export_in_fresh_process(m["checkpoint"], f"{work}/export-{size}", f"{work}/driver.log")
        worst = max(ranks, key=lambda r: r["peak_rss"])
        user = next(t["user"] for t in worst["plan"].values() if "user" in t)
        found[size] = (m["train/rows_per_s_steady"], worst["peak_rss"], worst["shards"] + worst["optimizer"])
        print(
            f"user {size:>11,} rows ({user['sharding_type']} on ranks {user['ranks']}): "
            f"{m['train/rows_per_s_steady']:>8,.0f} rows/s steady; worker peak "
            f"RSS {mb(worst['peak_rss'])} for {mb(worst['shards'])} of shards + {mb(worst['optimizer'])} of "
            f"optimizer state; checkpoint save {max(r['save_s'] for r in ranks):.1f} s, load "
            f"{max(r['load_s'] for r in warm):.1f} s; export {export_s:.1f} s, peak +{mb(export_peak)}",
            flush=True,
        )
        for done in (f"runs/t{size}", f"runs/t{size}-warm", f"export-{size}"):  # the next size's disk
            shutil.rmtree(Path(work, done), ignore_errors=True)
    small, large = sizes[0], sizes[-1]
    overhead = found[small][1] - found[small][2]
    limit = 1.3 * found[large][2] + overhead
    print(
        f"\nrows/s at {large:,} / at {small:,} rows: {found[large][0] / found[small][0]:.2f} (target >= 0.8)\n"
        f"worker peak at {large:,}: {mb(found[large][1])} against 1.3 x {mb(found[large][2])} + a fixed overhead of "
        f"{mb(overhead)} (measured at {small:,}) = {mb(limit)}: {'within' if found[large][1] <= limit else 'OVER'}"
    )
    rounds = [(found[small][0], found[large][0])]
    for r in range(1, args.rounds):
        steady = {}
        for size in (small, large):
            m, _ = train(work, args.rows, size, args.batch_size, f"t{size}-round{r}")
            steady[size] = m["train/rows_per_s_steady"]
            shutil.rmtree(Path(work, f"runs/t{size}-round{r}"), ignore_errors=True)
        rounds.append((steady[small], steady[large]))
    if args.rounds > 1:
        print(
            f"rows/s at {large:,} / at {small:,} rows per round: "
            + ", ".join(f"{b / a:.2f} ({b:,.0f} / {a:,.0f})" for a, b in rounds)
        )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
