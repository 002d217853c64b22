"""Configuration of the offline scoring job (jobs/score.py): one YAML file validated into a
typed object, plus the same dotted command-line overrides as training (`batch_size=8192`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.common.config import read_config_dict, validated


class ScoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verbose: bool = Field(False, description="library logs live on the console (always in <output>/_logs/)")
    key_columns: list[str] = Field(
        default_factory=lambda: ["impression_id", "user_id", "item_id"],
        min_length=1,
        description="input columns copied to every output row",
    )
    # Joint probabilities written next to the per-task ones: p_<name> = product of p_<task>.
    # p_ctcvr = p_ctr * p_cvr, since the cvr tower predicts P(conversion | click).
    products: dict[str, list[str]] = Field(default_factory=lambda: {"ctcvr": ["ctr", "cvr"]})
    batch_size: int = Field(8192, ge=1, description="rows per forward pass of one actor")
    num_actors: int = Field(2, ge=1, description="scoring actors, each holding one copy of the model")
    # Fractional CPUs leave room for Ray Data's read tasks; with every CPU taken by actors the
    # reads wait forever.
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    actor_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per actor (node pinning)"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads per actor; default max(1, int(cpus_per_actor))"
    )
    # jemalloc keeps an actor's peak memory flat however much it scores (pipeline/score/allocator.py);
    # "system" leaves the actors' allocator as the cluster sets it (glibc, tuned).
    actor_allocator: Literal["jemalloc", "system"] = "jemalloc"
    local_num_cpus: int | None = Field(
        None, ge=1, description="logical CPUs of the embedded local cluster (ignored when joining a cluster)"
    )
    # Scoring starts once every actor has loaded the model (so work is spread from the first
    # batch); a cluster that cannot place them all fails after this long instead of hanging.
    actor_start_timeout_s: float = Field(600.0, gt=0)
    write_rows: int = Field(65536, ge=1, description="rows buffered per output file before writing a row group")
    manifest_every_s: float = Field(5.0, ge=0, description="at most one manifest rewrite per this many seconds")
    progress_every_s: float = Field(10.0, gt=0)
    # Fault injection for tests: sleep this long in every batch, so a run can be killed mid-way.
    debug_batch_delay_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ScoreConfig:
        if len(set(self.key_columns)) != len(self.key_columns):
            raise ValueError(f"key_columns has duplicates: {self.key_columns}")
        for name, tasks in self.products.items():
            if len(tasks) < 2:
                raise ValueError(f"products.{name}: a product needs at least two tasks, got {tasks}")
        return self


def load_score_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ScoreConfig:
    return validated(ScoreConfig, read_config_dict(path, overrides), path, "score config")
