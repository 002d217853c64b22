"""Training throughput: is the data path the bottleneck? And what does a second worker buy?

    python benchmarks/bench_train.py                     # 400k generated rows, batch 1024/worker
    python benchmarks/bench_train.py --rows 2000000 --batch-size 2048

Measured side by side in one run, on one embedded Ray instance, with the real job's worker
code (pipeline/train/worker.py: sharded tables, TrainPipelineSparseDist, fused optimizers):
  streaming   the training job as it runs: Parquet -> Ray Data -> collate -> train step
  in-memory   the same workers and model, stepping on batches collated into memory first
for 2 workers and for 1, one epoch each. rows/s is the job's own figure: rows trained over the
time spent in training steps (evaluation and checkpoints excluded, data waits included), in
steady state (the job's `train/rows_per_s_steady`: each epoch's first step excluded, as it
waits for Ray Data to start the epoch's reads) and over the whole epoch (`train/rows_per_s`).
Prints the ratios streaming / in-memory (target >= 0.8, steady state: whether the data path
keeps up with the model) and 2 workers / 1 worker, and the epoch start-up time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from pipeline.train.config import load_config  # noqa: E402
from pipeline.train.launch import run_training  # noqa: E402
from pipeline.train.worker import WorkerTrainer  # noqa: E402


class InMemoryTrainer(WorkerTrainer):
    """The job's worker with its data path replaced by batches held in memory."""

    early_first_batch = False

    def train_batches(self):
        if not hasattr(self, "_cached"):
            self._cached = list(super().train_batches())  # read + collate once, untimed
        return iter(self._cached)


def in_memory_loop(loop_config: dict) -> None:
    from pipeline.data.feature_spec import spec_from_dict
    from pipeline.train.config import JobConfig

    cfg = JobConfig.model_validate(loop_config["job"])
    trainer = InMemoryTrainer(cfg, spec_from_dict(loop_config["spec"]), loop_config.get("files"))
    trainer.train_batches()  # fill the cache before fit() starts its clock
    trainer.fit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=400_000, help="generated rows over 3 days (2 train, 1 val)")
    p.add_argument("--batch-size", type=int, default=1024, help="per worker")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--gpu", action="store_true", help="one worker on one GPU (cluster.use_gpu=true)")
    args = p.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-train-")
    os.chdir(REPO)
    config = lambda mode, workers: load_config(
        "configs/jobs/train_local.yaml",
        [
            f"data.root={work}/data",
            f"output_dir={work}/runs",
            f"name={mode}-{workers}w",
            f"data.generate.rows={args.rows}",
            "train.epochs=1",
            f"train.batch_size={args.batch_size}",
            "train.checkpoint_every_steps=null",
            f"cluster.num_workers={workers}",
            "cluster.max_failures=0",
            f"cluster.use_gpu={str(args.gpu).lower()}",
        ],
    )
    counts = (1,) if args.gpu else (2, 1)
    rates = {}
    for workers in counts:
        # In-memory first: its untimed read through Ray Data leaves Ray's worker processes started
        # for the streaming run (on a fresh cluster the first epoch's reads waited for them: 4.8 s
        # to the first batch, against 1.5 s on a warm cluster, as a long-lived cluster is).
        for mode, loop in (("in-memory", in_memory_loop), ("streaming", None)):
            cfg = config(mode, workers)
            m = run_training(cfg, train_loop=loop).metrics
            rates[mode, workers] = m["train/rows_per_s_steady"], m["train/rows_per_s"]
            print(
                f"{mode:<10} {workers} worker(s): {m['train/rows_per_s_steady']:>10,.0f} rows/s steady, "
                f"{m['train/rows_per_s']:>10,.0f} rows/s over the epoch (its first step took "
                f"{m['train/epoch_start_s']:.1f} s)",
                flush=True,
            )
    print()
    for workers in counts:
        steady, whole = (rates["streaming", workers][i] / rates["in-memory", workers][i] for i in (0, 1))
        print(
            f"{workers} worker(s): streaming / in-memory = {steady:.2f} steady (target >= 0.8), "
            f"{whole:.2f} over the epoch"
        )
    if not args.gpu:
        print(
            f"streaming, 2 workers / 1 worker = {rates['streaming', 2][0] / rates['streaming', 1][0]:.2f} steady"
            f"  (this machine: {os.cpu_count()} cores for workers, Ray Data and the driver together)"
        )


if __name__ == "__main__":
    main()
