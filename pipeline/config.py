"""The training job's configuration: one YAML file validated into typed objects, plus
dotted command-line overrides (`train.batch_size=2048`). Errors name the bad key."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ple_model import ModelConfig


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateConfig(_Strict):
    """Synthetic logs written before training when `data.root` holds none (embedded default)."""

    rows: int = Field(200_000, ge=1000)
    days: int = Field(3, ge=2, description="the last day is used for validation")
    files_per_day: int = Field(2, ge=1)
    start_day: str = "2026-01-01"
    seed: int = 0


class DataConfig(_Strict):
    root: str = "data/synthetic"
    spec: str = "configs/synthetic.yaml"
    train_days: tuple[str, str] = ("2026-01-01", "2026-01-02")
    val_days: tuple[str, str] = ("2026-01-03", "2026-01-03")
    generate: Optional[GenerateConfig] = None


class TrainConfig(_Strict):
    batch_size: int = Field(1024, ge=1, description="per worker")
    epochs: int = Field(1, ge=1)
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many steps (all epochs)")
    sparse_optimizer: Literal["rowwise_adagrad", "adam", "sgd"] = "rowwise_adagrad"
    sparse_lr: float = Field(0.05, gt=0)
    dense_lr: float = Field(2e-3, gt=0)
    loss_weights: Optional[list[float]] = None
    loss_weight_decay: float = Field(0.0, ge=0.0, lt=1.0, description=(
        "per-step decay of every task weight after the first toward its floor (PLE paper's schedule)"))
    esmm: bool = False
    sharding_type: Optional[str] = None
    eval_every_steps: Optional[int] = Field(None, ge=1, description="also evaluate mid-epoch")
    checkpoint_every_steps: Optional[int] = Field(None, ge=1)
    seed: int = 0


class ClusterConfig(_Strict):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # Fractional CPUs: Ray Data's read tasks need CPUs left over, or they wait forever.
    cpus_per_worker: float = Field(0.5, gt=0)
    max_failures: int = Field(2, ge=0)
    local_num_cpus: Optional[int] = Field(None, ge=1, description="logical CPUs of the embedded local cluster")


class JobConfig(_Strict):
    name: str = "ple"
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _check(self) -> "JobConfig":
        w = self.train.loss_weights
        if w is not None and len(w) != self.model.num_tasks:
            raise ValueError(f"train.loss_weights has {len(w)} entries for model.num_tasks={self.model.num_tasks}")
        if self.train.esmm and self.model.num_tasks != 2:
            raise ValueError("train.esmm needs exactly two tasks (ctr, cvr)")
        return self


def _set_dotted(data: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override '{dotted}' is not KEY=VALUE (e.g. train.batch_size=2048)")
    key, value = dotted.split("=", 1)
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> JobConfig:
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read config: {err}") from None
    for item in overrides:
        _set_dotted(data, item)
    try:
        return JobConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path or '<defaults>'}: invalid config\n  " + "\n  ".join(lines)) from None
