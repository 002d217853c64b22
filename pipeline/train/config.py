"""The training job's configuration: one YAML file validated into typed objects, plus
dotted command-line overrides (`train.batch_size=2048`). Errors name the bad key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.common.config import ConfigError, StrictModel, read_config_dict, validated
from pipeline.data.files import day_range, iso_day
from pipeline.data.synthetic import DEFAULT_START_DAY, SyntheticConfig
from pipeline.train.early_stopping import EarlyStopping
from pipeline.train.schedule import LRSchedule
from pipeline.train.tracking import TrackingConfig
from ple_model import ModelConfig


class GenerateConfig(StrictModel):
    """Synthetic logs written before training when `data.root` holds none (embedded default)."""

    rows: int = Field(200_000, ge=1000)
    days: int = Field(3, ge=2, description="the last day is used for validation")
    files_per_day: int = Field(2, ge=1)
    start_day: str = DEFAULT_START_DAY
    seed: int = 0
    # Catalogue sizes: fewer ids means more impressions per id, i.e. a planted truth that a
    # short run can learn (the quality tests use this); the defaults are the generator's.
    num_users: int = Field(SyntheticConfig.num_users, ge=1)
    num_items: int = Field(SyntheticConfig.num_items, ge=1)
    conflict: float = Field(
        SyntheticConfig.conflict, ge=0.0, description="how strongly clickbait pits clicks against conversions"
    )
    id_drift: float = Field(
        SyntheticConfig.id_drift, ge=0.0, le=1.0, description="share of users and items replaced every day"
    )

    def synthetic(self) -> SyntheticConfig:
        """The generator's settings for these logs."""
        return SyntheticConfig(
            num_users=self.num_users, num_items=self.num_items, conflict=self.conflict, id_drift=self.id_drift
        )


class DataConfig(StrictModel):
    root: str = "data/synthetic"
    spec: str = "configs/features/synthetic.yaml"
    train_days: tuple[str, str] = ("2026-01-01", "2026-01-02")
    val_days: tuple[str, str] = ("2026-01-03", "2026-01-03")
    generate: GenerateConfig | None = None
    preserve_order: bool = Field(
        True,
        description=(
            "the workers get the days' rows in a fixed order, so runs of one config and seed train on "
            "the same batches and report the same metrics; false: in the order Ray Data's reads finish"
        ),
    )

    @field_validator("train_days", "val_days")
    @classmethod
    def _day_range(cls, days: tuple[str, str]) -> tuple[str, str]:
        """[first, last] days, both YYYY-MM-DD (20260101 is read as 2026-01-01), first <= last."""
        try:
            first, last = iso_day(days[0]), iso_day(days[1])
            day_range(first, last)
        except ValueError as e:
            raise ValueError(f"expected [first day, last day], both YYYY-MM-DD ({e})") from None
        return first, last

    @model_validator(mode="after")
    def _validation_apart(self) -> DataConfig:
        # Metrics on rows the model trained on flatter it, early stopping and the comparison included.
        shared = sorted(set(day_range(*self.train_days)) & set(day_range(*self.val_days)))
        if shared:
            raise ValueError(
                f"val_days {list(self.val_days)} overlap train_days {list(self.train_days)} "
                f"({shared[0]}{'..' + shared[-1] if len(shared) > 1 else ''}): validation would measure the model on "
                "rows it trained on; choose validation days outside the training days"
            )
        return self


class TrainConfig(StrictModel):
    batch_size: int = Field(1024, ge=1, description="per worker")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (all epochs)")
    sparse_optimizer: Literal["rowwise_adagrad", "adam", "sgd"] = "rowwise_adagrad"
    sparse_lr: float = Field(0.05, gt=0)
    dense_lr: float = Field(2e-3, gt=0)
    lr_schedule: LRSchedule = LRSchedule()
    loss_weights: list[float] | None = None
    loss_weight_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description=("per-step decay of every task weight after the first toward its floor (PLE paper's schedule)"),
    )
    loss_balancing: Literal["fixed", "uncertainty", "dwa"] = Field(
        "fixed",
        description=(
            "fixed: loss_weights (and loss_weight_decay); uncertainty: also a learned weight per task "
            "(Kendall et al., CVPR 2018); dwa: also weights from how fast each loss falls (Liu et al., CVPR 2019)"
        ),
    )
    dwa_window: int = Field(50, ge=1, description="dwa: steps per window of averaged losses")
    dwa_temperature: float = Field(2.0, gt=0)
    esmm: bool = False
    sharding_type: str | None = None
    log_every_steps: int | None = Field(
        None, ge=1, description="a progress line (losses, rows/s, ETA) from rank 0 every this many steps"
    )
    log_every_s: float | None = Field(
        15.0, gt=0, description="a progress line at the first step this long after the previous one"
    )
    eval_every_steps: int | None = Field(None, ge=1, description="also evaluate mid-epoch")
    eval_at_start: bool = Field(
        False, description="evaluate before the first step (e.g. a warm start's starting point)"
    )
    val_cache_rows: int = Field(
        2_000_000,
        ge=0,
        description=(
            "keep a worker's validation batches in memory after the first evaluation when its shard has at most "
            "this many rows (0: stream them from Parquet every time)"
        ),
    )
    checkpoint_every_steps: int | None = Field(None, ge=1)
    early_stopping: EarlyStopping | None = Field(
        None,
        description=(
            "watch a validation metric at every evaluation (train.eval_every_steps), checkpoint there, stop after "
            "`patience` evaluations without improvement, and export the best checkpoint"
        ),
    )
    init_from: str | None = Field(
        None,
        description=(
            "warm start: a training checkpoint directory (readable by every worker) whose weights and "
            "optimizer state a new run starts from; a resumed run ignores it"
        ),
    )
    seed: int = 0


class ClusterConfig(StrictModel):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # Fractional CPUs: Ray Data's read tasks need CPUs left over, or they wait forever.
    cpus_per_worker: float = Field(0.5, gt=0)
    max_failures: int = Field(2, ge=0)
    # SPREAD puts the workers on different nodes where it can (one worker per host, say).
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    local_num_cpus: int | None = Field(None, ge=1, description="logical CPUs of the embedded local cluster")
    # Ray Train's controller takes workers' reports (metrics, checkpoints) only when it polls
    # them: at Ray's default of 2 s every evaluation and checkpoint stalled the workers ~0.8 s.
    # An explicit RAY_TRAIN_HEALTH_CHECK_INTERVAL_S in the environment wins (train/ray_train_env.py).
    health_check_interval_s: float = Field(0.5, gt=0)
    # Memory one worker may hold, which the sharding planner fits the tables and their optimizer
    # state into (failing at planning, naming the tables, when they cannot fit). None: a GPU's
    # memory, or on CPU the node's memory shared among the workers on it.
    worker_memory_gb: float | None = Field(None, gt=0)


class JobConfig(StrictModel):
    name: str = "ple"
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    cluster: ClusterConfig = ClusterConfig()
    tracking: TrackingConfig = TrackingConfig()
    # Library logs and warnings live on the console too (the jobs' --verbose); either way they
    # are in <output_dir>/<name>/logs/ (pipeline/common/logs.py).
    verbose: bool = False

    @property
    def run_dir(self) -> Path:
        """<output_dir>/<name>, absolute: the run's checkpoints (Ray Train's), export/ and logs/."""
        return Path(self.output_dir).resolve() / self.name

    @model_validator(mode="after")
    def _check(self) -> JobConfig:
        w = self.train.loss_weights
        if w is not None and len(w) != self.model.num_tasks:
            raise ValueError(f"train.loss_weights has {len(w)} entries for model.num_tasks={self.model.num_tasks}")
        if self.train.early_stopping is not None and self.train.eval_every_steps is None:
            raise ValueError("train.early_stopping needs train.eval_every_steps (how often to evaluate)")
        if self.train.esmm and self.model.num_tasks != 2:
            raise ValueError("train.esmm needs exactly two tasks (ctr, cvr)")
        return self


def tasks_from_spec(data: dict, path) -> None:
    """The feature spec is the one source of the task list: set model.num_tasks from it here,
    once, so that every later consumer (workers, export, scoring) reads a consistent config."""
    from pipeline.data.feature_spec import FeatureSpecError, load_spec

    spec_path = (data.get("data") or {}).get("spec", DataConfig().spec)
    try:
        n = len(load_spec(spec_path).tasks)
    except (OSError, FeatureSpecError) as err:
        raise ConfigError(f"{path or '<defaults>'}: data.spec: {err}") from None
    model = data.setdefault("model", {}) or {}
    if model.get("num_tasks", n) != n:
        raise ConfigError(
            f"{path or '<defaults>'}: model.num_tasks={model['num_tasks']} but the feature spec "
            f"{spec_path} defines {n} tasks"
        )
    data["model"] = {**model, "num_tasks": n}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> JobConfig:
    data = read_config_dict(path, overrides)
    tasks_from_spec(data, path)
    return validated(JobConfig, data, path)
