"""Driver side of the training job: connect to (or start) Ray, make sure the data exists,
build the Ray Data datasets and the TorchTrainer, run it, export the model."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pipeline.config import JobConfig
from pipeline.feature_spec import FeatureSpec, load_spec


@dataclass
class TrainingResult:
    metrics: dict
    checkpoint_dir: str
    export_dir: str
    run_dir: str


def connect_ray(cfg: JobConfig, address: Optional[str] = None) -> None:
    """Join the cluster named by `address` / RAY_ADDRESS (set by `ray job submit`), else
    start an embedded local one sized by `cluster.local_num_cpus`."""
    import ray

    # Progress bars print thousands of lines when stdout is not a TTY (job logs, CI).
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=cfg.cluster.local_num_cpus, include_dashboard=False, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def ensure_data(cfg: JobConfig) -> None:
    """Generate the synthetic logs when `data.generate` is set and the root has none."""
    root, gen = Path(cfg.data.root), cfg.data.generate
    if gen is None or any(root.glob("dt=*/*.parquet")):
        return
    from pipeline.synthetic import generate_dataset

    print(f"[data] generating {gen.rows:,} rows over {gen.days} days into {root}", flush=True)
    generate_dataset(str(root), gen.rows, days=gen.days, files_per_day=gen.files_per_day, seed=gen.seed,
                     start_day=gen.start_day)


def make_trainer(cfg: JobConfig, spec: FeatureSpec, datasets: dict, storage_path: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.trainer import train_loop_per_worker

    c = cfg.cluster
    resources = {"CPU": c.cpus_per_worker, **({"GPU": 1} if c.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": cfg.model_dump(mode="json"), "spec": spec.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=c.use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo"),
        run_config=RunConfig(
            name=cfg.name, storage_path=storage_path,
            failure_config=FailureConfig(max_failures=c.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets=datasets,
    )


def run_training(cfg: JobConfig, address: Optional[str] = None) -> TrainingResult:
    from pipeline.export import export_model
    from pipeline.reader import read_days

    spec = load_spec(cfg.data.spec)
    if len(spec.tasks) != cfg.model.num_tasks:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"num_tasks": len(spec.tasks)})})
    connect_ray(cfg, address)
    ensure_data(cfg)
    d = cfg.data
    datasets = {"train": read_days(d.root, *d.train_days, spec), "val": read_days(d.root, *d.val_days, spec)}
    storage = str(Path(cfg.output_dir).resolve())
    result = make_trainer(cfg, spec, datasets, storage).fit()
    if result.error:
        raise result.error
    run_dir = os.path.join(storage, cfg.name)
    export_dir = os.path.join(run_dir, "export")
    export_model(result.checkpoint.path, export_dir, metrics=result.metrics)
    return TrainingResult(metrics=result.metrics, checkpoint_dir=result.checkpoint.path, export_dir=export_dir,
                          run_dir=run_dir)
