"""Configuration of the daily retrain (jobs/retrain.py): one YAML file holding a `retrain:`
section (registry, gate tolerances, lock) next to the usual training job sections (name,
output_dir, data, model, train, cluster; see pipeline/train/config.py). The training days and the
warm start are set by each run, not by the file. Dotted overrides work on both
(`retrain.registry=/mnt/models train.batch_size=2048`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from pipeline.common.config import ConfigError, StrictModel, read_config_dict, validated
from pipeline.registry.lock import STALE_AFTER_S
from pipeline.train.config import JobConfig, tasks_from_spec


class TaskTolerance(StrictModel):
    """How much worse than production, on the held-out day, a candidate may be and still ship."""

    max_auc_drop: float = Field(0.002, ge=0, description="candidate AUC >= production AUC - this")
    max_logloss_rise: float | None = Field(
        None, ge=0, description=("candidate log loss <= production log loss + this (None: log loss is not gated)")
    )
    max_gauc_drop: float | None = Field(
        None,
        ge=0,
        description="candidate GAUC >= production GAUC - this (None: not gated; needs the spec's group_by)",
    )


class RetrainSettings(StrictModel):
    registry: str = Field(
        ..., description="registry root: a local or mounted path, or an fsspec URL (s3://bucket/registry)"
    )
    tolerance: dict[str, TaskTolerance] = Field(default_factory=dict, description="per task name")
    default_tolerance: TaskTolerance = TaskTolerance()
    # A day counts as arrived when its dt=YYYY-MM-DD partition holds Parquet files, or, with a
    # marker (e.g. "_SUCCESS" written by the log pipeline last), only once that file exists.
    ready_marker: str | None = None
    max_train_days: int | None = Field(
        None,
        ge=1,
        description=(
            "train on at most this many of the newest days (a long-stale production model, a first run "
            "on a long history); None: every day since production's"
        ),
    )
    eval_batch_size: int = Field(8192, ge=1)
    eval_max_rows: int | None = Field(
        None, ge=1, description=("evaluate candidate and production on the first this-many rows of the held-out day")
    )
    lock_stale_after_s: float = Field(
        STALE_AFTER_S, gt=0, description=("a lock whose holder has not heartbeaten for this long is taken over")
    )
    keep_attempts: bool = Field(
        False, description=("keep each attempt's Ray Train run directory under output_dir after publishing it")
    )


class RetrainConfig(StrictModel):
    retrain: RetrainSettings
    job: JobConfig


def load_retrain_config(path: str | Path, overrides: Sequence[str] = ()) -> RetrainConfig:
    data = read_config_dict(path, overrides)
    section = data.pop("retrain", None)
    if section is None:
        raise ConfigError(f"{path}: no 'retrain:' section (registry, tolerances)")
    tasks_from_spec(data, path)
    cfg = validated(RetrainConfig, {"retrain": section, "job": data}, path, "retrain config", drop_prefix="job")
    unknown = set(cfg.retrain.tolerance) - set(_task_names(cfg.job))
    if unknown:
        raise ConfigError(
            f"{path}: retrain.tolerance names tasks {sorted(unknown)} that the feature spec "
            f"{cfg.job.data.spec} does not define (its tasks: {_task_names(cfg.job)}): override it, "
            "e.g. 'retrain.tolerance={}' for default_tolerance on every task"
        )
    return cfg


def _task_names(job: JobConfig) -> list[str]:
    from pipeline.data.feature_spec import load_spec

    return load_spec(job.data.spec).task_names
