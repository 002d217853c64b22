"""Training throughput: is the data path the bottleneck? And what does a second worker buy?

    python benchmarks/bench_train.py                     # 400k generated rows, batch 1024/worker
    python benchmarks/bench_train.py --rows 2000000 --batch-size 2048

Measured side by side in one run, on one embedded Ray instance, with the real job's worker
code (pipeline/trainer.py: sharded tables, TrainPipelineSparseDist, fused optimizers):
  streaming   the training job as it runs: Parquet -> Ray Data -> collate -> train step
  in-memory   the same workers and model, stepping on batches collated into memory first
for 2 workers and for 1, one epoch each. rows/s is the job's own figure: rows trained over the
time spent in training steps (evaluation and checkpoints excluded, data waits included).
Prints the ratio streaming / in-memory (target >= 0.8) and 2 workers / 1 worker.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from pipeline.config import load_config  # noqa: E402
from pipeline.launch import run_training  # noqa: E402
from pipeline.trainer import WorkerTrainer  # noqa: E402


class InMemoryTrainer(WorkerTrainer):
    """The job's worker with its data path replaced by batches held in memory."""

    def train_batches(self):
        if not hasattr(self, "_cached"):
            self._cached = list(super().train_batches())  # read + collate once, untimed
        return iter(self._cached)


def in_memory_loop(loop_config: dict) -> None:
    from pipeline.config import JobConfig
    from pipeline.feature_spec import spec_from_dict

    cfg = JobConfig.model_validate(loop_config["job"])
    trainer = InMemoryTrainer(cfg, spec_from_dict(loop_config["spec"]), loop_config.get("files"))
    trainer.train_batches()  # fill the cache before fit() starts its clock
    trainer.fit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=400_000, help="generated rows over 3 days (2 train, 1 val)")
    p.add_argument("--batch-size", type=int, default=1024, help="per worker")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-train-")
    os.chdir(REPO)
    rates = {}
    for workers in (2, 1):
        for mode, loop in (("streaming", None), ("in-memory", in_memory_loop)):
            cfg = load_config("configs/local.yaml", [
                f"data.root={work}/data", f"output_dir={work}/runs", f"name={mode}-{workers}w",
                f"data.generate.rows={args.rows}", "train.epochs=1", f"train.batch_size={args.batch_size}",
                "train.checkpoint_every_steps=null", f"cluster.num_workers={workers}", "cluster.max_failures=0"])
            rates[mode, workers] = run_training(cfg, train_loop=loop).metrics["train/rows_per_s"]
            print(f"{mode:<10} {workers} worker(s): {rates[mode, workers]:>10,.0f} rows/s", flush=True)
    print()
    for workers in (2, 1):
        ratio = rates["streaming", workers] / rates["in-memory", workers]
        print(f"{workers} worker(s): streaming / in-memory = {ratio:.2f}  (target >= 0.8)")
    print(f"streaming, 2 workers / 1 worker = {rates['streaming', 2] / rates['streaming', 1]:.2f}"
          f"  (this machine: {os.cpu_count()} cores for workers, Ray Data and the driver together)")


if __name__ == "__main__":
    main()
