"""A tiny model and feature spec shared by the sharding, optimizer and checkpoint tests: ids hash
into few rows, so rows are shared by many examples (gradients accumulate), and dim 8 tables
split into two column shards."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import yaml

from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
from pipeline.data.synthetic import generate_table
from ple_model.config import ModelConfig

REPO = Path(__file__).resolve().parents[2]
MODEL = ModelConfig(expert_hidden=[16], tower_hidden=[8])
GLOBAL_BATCH = 96


def tiny_spec() -> FeatureSpec:
    """configs/features/synthetic.yaml with tiny tables."""
    data = yaml.safe_load((REPO / "configs" / "features" / "synthetic.yaml").read_text())
    data["tables"] = [
        {"name": "user", "vocab_size": 64, "dim": 8},
        {"name": "item", "vocab_size": 48, "dim": 8, "pooling": "mean"},
        {"name": "category", "hash_buckets": 32, "dim": 4},
        {"name": "device", "hash_buckets": 8, "dim": 4},
    ]
    return spec_from_dict(data)


MANAGED_ROWS = 16


def managed_spec(policy: str = "lru", interval: int = 1, missing: str = "error") -> FeatureSpec:
    """tiny_spec with its user table managed (MANAGED_ROWS rows, `policy` every `interval` steps)."""
    data = tiny_spec().model_dump(mode="json")
    data["tables"][0] = {
        "name": "user",
        "hash_buckets": MANAGED_ROWS,
        "dim": 8,
        "collision": "managed",
        "eviction": {"policy": policy, "interval_steps": interval},
    }
    for f in data["sparse"]:
        if f["table"] == "user":
            f["missing"] = missing
    data["group_by"] = None  # user_id, here also with nulls
    return spec_from_dict(data)


def global_batch(step: int) -> pa.Table:
    """The rows of training step `step`, the same in every process."""
    return generate_table(GLOBAL_BATCH, seed=1000 + step)
