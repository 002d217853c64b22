"""Driver side of the training job: connect to (or start) Ray, make sure the data exists,
build the Ray Data datasets and the TorchTrainer, run it, export the model."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.config import ConfigError, differences
from pipeline.common.files import write_text_atomic
from pipeline.common.logs import plural
from pipeline.data.feature_spec import FeatureSpec, load_spec
from pipeline.train.config import ClusterConfig, JobConfig
from pipeline.train.early_stopping import SCORE_KEY, STEP_KEY
from pipeline.train.run_lock import empty_run, hold_run


@dataclass
class TrainingResult:
    metrics: dict  # the final evaluation: val/<task>/{auc,logloss,calibration,count}, step, ...
    history: list[dict]  # every evaluation in order, each with its step and epoch
    checkpoint_dir: str
    export_dir: str
    run_dir: str


class RunStopped(RuntimeError):
    """The run stopped before it finished, from outside (Ctrl-C, or its Ray cluster went away).
    `checkpoint`: its latest registered checkpoint, or None."""

    def __init__(self, run_dir: str, checkpoint: str | None) -> None:
        self.checkpoint = checkpoint
        where = f"its latest checkpoint is {checkpoint}" if checkpoint else "it had not saved a checkpoint yet"
        super().__init__(
            f"training run {run_dir} stopped before it finished (interrupted, or its Ray cluster went away); {where}"
        )


def connect_ray(cfg: JobConfig, address: str | None = None) -> None:
    """Join the cluster named by `address` / RAY_ADDRESS (set by `ray job submit`), else
    start an embedded local one sized by `cluster.local_num_cpus`."""
    from pipeline.common.ray_cluster import connect

    connect(address, cfg.cluster.local_num_cpus)


GENERATED_FILE = "_generated.json"  # in a generated root: the data.generate settings that wrote it


def ensure_data(cfg: JobConfig) -> None:
    """Generate the synthetic logs when `data.generate` is set and the root has none. A root
    generated earlier with other settings (say, an older default's catalogue) is refused rather
    than trained on: its rows would not be the ones the config describes."""
    root, gen = Path(cfg.data.root), cfg.data.generate
    if gen is None:
        return
    marker, wanted = root / GENERATED_FILE, gen.model_dump(mode="json")
    if any(root.glob("dt=*/*.parquet")):
        if not marker.is_file():
            print(f"[data] using the logs already in {root} (not a record of data.generate: remove it to regenerate)")
            return
        had = json.loads(marker.read_text())
        changed = differences(had, wanted)
        if changed:
            raise ConfigError(
                f"{root} holds logs generated with other data.generate settings ({'; '.join(changed)}); "
                "remove the folder to generate them again, or point data.root elsewhere"
            )
        return
    from pipeline.data.synthetic import generate_dataset

    print(f"[data] generating {gen.rows:,} rows over {plural(gen.days, 'day')} into {root}", flush=True)
    generate_dataset(
        str(root),
        gen.rows,
        days=gen.days,
        files_per_day=gen.files_per_day,
        seed=gen.seed,
        start_day=gen.start_day,
        config=gen.synthetic(),
    )
    write_text_atomic(marker, json.dumps(wanted, indent=1))


def make_trainer(
    cfg: JobConfig,
    spec: FeatureSpec,
    datasets: dict,
    storage_path: str,
    train_loop: Callable[[dict], None] | None = None,
    *,
    name: str | None = None,
    loop_config: dict | None = None,
    num_to_keep: int | None = 2,
):
    """Re-running with the same name and storage path resumes the run from its latest
    checkpoint (Ray Train restores its checkpoint manager from storage)."""
    from ray.train import DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.train.fail_fast import FailFast
    from pipeline.train.worker import train_loop_per_worker

    c = cfg.cluster
    resources = {"CPU": c.cpus_per_worker, **({"GPU": 1} if c.use_gpu else {})}
    return TorchTrainer(
        train_loop or train_loop_per_worker,
        train_loop_config={
            **(loop_config or {"job": cfg.model_dump(mode="json")}),
            "spec": spec.model_dump(mode="json"),
            "files": {key: ds.input_files() for key, ds in datasets.items()},
            "log_dir": str(Path(storage_path) / (name or cfg.name) / "logs"),  # the workers' full logs
            "storage": storage_path,  # absolute: the workers do not run in the driver's directory
        },
        scaling_config=ScalingConfig(
            num_workers=c.num_workers,
            use_gpu=c.use_gpu,
            resources_per_worker=resources,
            placement_strategy=c.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo"),
        # ray.train exports Train v2's RunConfig at run time; mypy sees v1's (no callbacks or logging_config).
        run_config=RunConfig(  # type: ignore[call-arg]
            name=name or cfg.name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=c.max_failures),
            checkpoint_config=_checkpoint_config(cfg, num_to_keep),
            callbacks=[FailFast()],  # type: ignore[list-item]  # bad data or config: no retries (pipeline/train/fail_fast.py)
            # Ray Train's INFO lines (an echo of every report from every rank) only when verbose.
            logging_config=LoggingConfig(log_level="INFO" if cfg.verbose else "WARNING"),
        ),
        datasets=datasets,
        dataset_config=DataConfig(execution_options=ingest_options(cfg)),
    )


def ingest_options(cfg: JobConfig):
    """Ray Data's execution options for the training job's datasets: Ray Train's defaults, with
    `data.preserve_order`. With it, blocks leave Ray Data in the order of its read tasks, so
    Ray Train's split hands every worker the same rows in the same order on every run; without
    it, in the order the reads finish, which changes from run to run. Measured on
    benchmarks/bench_collisions.py's logs (5 days of 150k rows): repeated runs of one config and
    seed reached validation AUCs up to 0.02 apart without it, on 1 and on 2 workers, and were
    identical with it, at the same rows/s (ordered/unordered 1.07, 1.01, 1.05)."""
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = cfg.data.preserve_order
    return options


def fit(trainer, cluster: ClusterConfig, address: str | None):
    """Run `trainer` (from make_trainer) with Ray Train's settings for this cluster
    (pipeline/train/ray_train_env.py); a run stopped for bad data or config raises the worker's
    own error (a DataValidationError, say) instead of Ray Train's wrapper around it."""
    from pipeline.common.environ import environ_defaults
    from pipeline.train.fail_fast import unwrap_fail_fast
    from pipeline.train.ray_train_env import ray_train_settings

    try:
        with environ_defaults(ray_train_settings(cluster, address)), _own_ctrl_c_handler_after():
            result = trainer.fit()
    except SystemExit:
        # Ray Train's Ctrl-C handler aborts the run, and the driver's wait on it then ends in
        # SystemExit, without a word on the console; the same when the cluster's raylet dies.
        raise _stopped(trainer) from None
    except Exception as err:
        cause = unwrap_fail_fast(err)
        if cause is err:
            raise
        raise cause from None
    if result.error:
        raise result.error
    return result


@contextmanager
def _own_ctrl_c_handler_after() -> Iterator[None]:
    """Ray Train's fit sets a SIGINT handler that aborts its run and leaves it set: a Ctrl-C
    during the export was then swallowed (measured: the handler asked the finished run's
    controller to abort and returned). This process's own handler comes back when the fit returns."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _stopped(trainer) -> RunStopped:
    """RunStopped for `trainer`'s run, naming the checkpoint a rerun would resume from (Ray
    Train's record of the run in storage, read without the cluster)."""
    from ray.train import Result

    run_dir = os.path.join(trainer.run_config.storage_path, trainer.run_config.name)
    try:
        checkpoint = Result.from_path(run_dir).checkpoint
    except RuntimeError:  # no record: it stopped before its first checkpoint
        checkpoint = None
    return RunStopped(run_dir, checkpoint.path if checkpoint else None)


def _checkpoint_config(cfg: JobConfig, num_to_keep: int | None):
    """Keep the newest `num_to_keep` checkpoints; with early stopping, the best ones by the
    watched metric instead (Ray Train always keeps the latest too, for resuming)."""
    from ray.train import CheckpointConfig

    if cfg.train.early_stopping is None:
        return CheckpointConfig(num_to_keep=num_to_keep)
    return CheckpointConfig(num_to_keep=num_to_keep, checkpoint_score_attribute=SCORE_KEY, checkpoint_score_order="max")


def _exported_checkpoint(cfg: JobConfig, final_checkpoint, final: dict, kept: list, run: str | None = None):
    """(checkpoint, metrics) to export: the final ones, or with early stopping the best
    evaluation's checkpoint, with its validation metrics and `best/step` in the final metrics."""
    if cfg.train.early_stopping is None:
        return final_checkpoint, final
    step = final[STEP_KEY]
    for checkpoint, m in kept:
        if m.get("run") == run and m.get("step") == step:
            val = {k: v for k, v in m.items() if k.startswith("val/")}
            return checkpoint, {**final, **val, "final_step": final["step"]}
    steps = sorted(m.get("step") for _, m in kept if m.get("run") == run)
    raise RuntimeError(
        f"run {run or cfg.name}: the checkpoint of its best evaluation (step {step:.0f}) was not kept (kept: {steps})"
    )


def _prepare(cfg: JobConfig, address: str | None) -> tuple[FeatureSpec, dict]:
    from pipeline.common.cluster_fit import Request, check_cluster_fits
    from pipeline.data.files import read_days

    spec = load_spec(cfg.data.spec)
    connect_ray(cfg, address)
    c = cfg.cluster
    workers = Request(
        "workers",
        c.num_workers,
        c.cpus_per_worker,
        1.0 if c.use_gpu else 0.0,
        count_key="cluster.num_workers",
        cpus_key="cluster.cpus_per_worker",
        gpus_key="cluster.use_gpu",
        fewer_gpus="train on CPUs: cluster.use_gpu=false",
        local_cpus_key="cluster.local_num_cpus",
    )
    check_cluster_fits(workers, address, log=lambda line: print(f"[train] {line}"))
    ensure_data(cfg)
    d = cfg.data
    return spec, {"train": read_days(d.root, *d.train_days, spec), "val": read_days(d.root, *d.val_days, spec)}


def _best_aucs(datasets: dict) -> dict[str, float]:
    """On generated data, the ceiling set by the planted truth puts the AUCs in perspective:
    {"val/<task>/best_auc": AUC of the true probabilities} (empty on real data)."""
    from pipeline.data.synthetic import best_achievable_auc_of_files

    best = best_achievable_auc_of_files(datasets["val"].input_files())
    return {f"val/{task}/best_auc": auc for task, auc in best.items()}


def _finish(cfg: JobConfig, checkpoint, metrics: dict, best_aucs: dict, final_checkpoint) -> TrainingResult:
    """Add the best achievable AUCs to a run's metrics and export `checkpoint` (the final one,
    or with early stopping the best); the history is the final checkpoint's, every evaluation."""
    from pipeline.train.checkpoint import EXTRA_FILE
    from pipeline.train.export import export_model
    from pipeline.train.tracking import log_mlflow_run

    metrics = {**metrics, **best_aucs}
    # The evaluation history travels in the checkpoint (Ray logs every reported metric in full).
    extra = json.loads((Path(final_checkpoint.path) / EXTRA_FILE).read_text())
    run_dir = str(cfg.run_dir)
    export_dir = os.path.join(run_dir, "export")
    export_model(checkpoint.path, export_dir, metrics=metrics)
    log_mlflow_run(
        cfg.tracking,
        experiment=cfg.name,
        run_name=cfg.name,
        params=cfg.model_dump(mode="json"),
        history=extra["history"],
        final=metrics,
        artifacts={"model": export_dir},
    )
    return TrainingResult(
        metrics=metrics,
        history=extra["history"],
        checkpoint_dir=checkpoint.path,
        export_dir=export_dir,
        run_dir=run_dir,
    )


def run_training(
    cfg: JobConfig, address: str | None = None, train_loop: Callable[[dict], None] | None = None
) -> TrainingResult:
    """train_loop: replaces pipeline.train.worker.train_loop_per_worker (benchmarks use it).
    RunInUseError while another job trains the same run (pipeline/train/run_lock.py)."""
    with hold_run(cfg.run_dir):
        spec, datasets = _prepare(cfg, address)
        result = fit(
            make_trainer(cfg, spec, datasets, str(Path(cfg.output_dir).resolve()), train_loop), cfg.cluster, address
        )
        checkpoint, metrics = _exported_checkpoint(cfg, result.checkpoint, result.metrics, result.best_checkpoints)
        return _finish(cfg, checkpoint, metrics, _best_aucs(datasets), result.checkpoint)


def run_training_group(cfgs: list[JobConfig], name: str, address: str | None = None) -> list[TrainingResult]:
    """Several runs on the same data and cluster (models, seeds or loss weights differ) trained
    one after the other inside ONE Ray Train run: each is a full run (its own sharded model,
    optimizers, evaluations and final checkpoint, exported to <output_dir>/<its name>/export),
    but Ray Train's start-up and shutdown (~10 s on 2 cores, more than a small run's training)
    and the workers' imports are paid once. The comparison job uses it. Not resumable: a
    restarted group trains every run again."""
    base = cfgs[0]
    for c in cfgs[1:]:
        if (c.data, c.cluster, c.output_dir, c.train.batch_size) != (
            base.data,
            base.cluster,
            base.output_dir,
            base.train.batch_size,
        ):
            raise ValueError(
                f"run group {name}: {c.name} differs from {base.name} in data, cluster, output_dir or train.batch_size"
            )
    if len({c.name for c in cfgs}) != len(cfgs):
        raise ValueError(f"run group {name}: run names must differ")
    storage = str(Path(base.output_dir).resolve())
    with hold_run(os.path.join(storage, name)):
        empty_run(os.path.join(storage, name))  # a group never resumes
        spec, datasets = _prepare(base, address)
        loop_config = {"jobs": [c.model_dump(mode="json") for c in cfgs]}
        # Every run reports one checkpoint, its final one: keep them all.
        trainer = make_trainer(base, spec, datasets, storage, name=name, loop_config=loop_config, num_to_keep=None)
        result = fit(trainer, base.cluster, address)
        kept = result.best_checkpoints
        finals = {m["run"]: (ckpt, m) for ckpt, m in kept if m.get("done")}
        best = _best_aucs(datasets)  # the same validation days for every run: read once
        results = []
        for c in cfgs:
            checkpoint, metrics = _exported_checkpoint(c, *finals[c.name], kept, run=c.name)
            results.append(_finish(c, checkpoint, metrics, best, finals[c.name][0]))
        return results
