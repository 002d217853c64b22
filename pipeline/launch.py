"""Driver side of the training job: connect to (or start) Ray, make sure the data exists,
build the Ray Data datasets and the TorchTrainer, run it, export the model."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pipeline.config import JobConfig
from pipeline.feature_spec import FeatureSpec, load_spec


@dataclass
class TrainingResult:
    metrics: dict  # the final evaluation: val/<task>/{auc,logloss,calibration,count}, step, ...
    history: list[dict]  # every evaluation in order, each with its step and epoch
    checkpoint_dir: str
    export_dir: str
    run_dir: str


def connect_ray(cfg: JobConfig, address: Optional[str] = None) -> None:
    """Join the cluster named by `address` / RAY_ADDRESS (set by `ray job submit`), else
    start an embedded local one sized by `cluster.local_num_cpus`."""
    from pipeline.ray_utils import connect

    connect(address, cfg.cluster.local_num_cpus)


def ensure_data(cfg: JobConfig) -> None:
    """Generate the synthetic logs when `data.generate` is set and the root has none."""
    root, gen = Path(cfg.data.root), cfg.data.generate
    if gen is None or any(root.glob("dt=*/*.parquet")):
        return
    from pipeline.synthetic import SyntheticConfig, generate_dataset

    print(f"[data] generating {gen.rows:,} rows over {gen.days} days into {root}", flush=True)
    generate_dataset(str(root), gen.rows, days=gen.days, files_per_day=gen.files_per_day, seed=gen.seed,
                     start_day=gen.start_day, config=SyntheticConfig(num_users=gen.num_users, num_items=gen.num_items))


def make_trainer(cfg: JobConfig, spec: FeatureSpec, datasets: dict, storage_path: str,
                 train_loop: Optional[Callable[[dict], None]] = None):
    """Re-running with the same name and storage path resumes the run from its latest
    checkpoint (Ray Train restores its checkpoint manager from storage)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.trainer import train_loop_per_worker

    c = cfg.cluster
    resources = {"CPU": c.cpus_per_worker, **({"GPU": 1} if c.use_gpu else {})}
    return TorchTrainer(
        train_loop or train_loop_per_worker,
        train_loop_config={"job": cfg.model_dump(mode="json"), "spec": spec.model_dump(mode="json"),
                           "files": {name: ds.input_files() for name, ds in datasets.items()}},
        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=c.use_gpu, resources_per_worker=resources,
                                     placement_strategy=c.placement_strategy),
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo"),
        run_config=RunConfig(
            name=cfg.name, storage_path=storage_path,
            failure_config=FailureConfig(max_failures=c.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )


def run_training(cfg: JobConfig, address: Optional[str] = None,
                 train_loop: Optional[Callable[[dict], None]] = None) -> TrainingResult:
    """train_loop: replaces pipeline.trainer.train_loop_per_worker (benchmarks use it)."""
    from pipeline.checkpoint import EXTRA_FILE
    from pipeline.export import export_model
    from pipeline.reader import read_days
    from pipeline.synthetic import best_achievable_auc_of_files

    spec = load_spec(cfg.data.spec)
    connect_ray(cfg, address)
    ensure_data(cfg)
    d = cfg.data
    datasets = {"train": read_days(d.root, *d.train_days, spec), "val": read_days(d.root, *d.val_days, spec)}
    storage = str(Path(cfg.output_dir).resolve())
    result = make_trainer(cfg, spec, datasets, storage, train_loop).fit()
    if result.error:
        raise result.error
    metrics = dict(result.metrics)
    # The evaluation history travels in the checkpoint (Ray logs every reported metric in full).
    extra = json.loads((Path(result.checkpoint.path) / EXTRA_FILE).read_text())
    # On generated data, the ceiling set by the planted truth puts the AUCs in perspective.
    best = best_achievable_auc_of_files(datasets["val"].input_files())
    metrics.update({f"val/{task}/best_auc": auc for task, auc in best.items()})
    run_dir = os.path.join(storage, cfg.name)
    export_dir = os.path.join(run_dir, "export")
    export_model(result.checkpoint.path, export_dir, metrics=metrics)
    return TrainingResult(metrics=metrics, history=extra["history"], checkpoint_dir=result.checkpoint.path,
                          export_dir=export_dir, run_dir=run_dir)
