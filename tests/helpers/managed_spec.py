"""configs/features/synthetic_managed.yaml with a user table smaller than the generated
catalogue, so that it fills and evicts, and eviction every 2 steps (for short test runs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.data.feature_spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def small_managed_spec(tmp_path: Path, user_rows: int) -> str:
    """Path of the spec written under `tmp_path`: `user_rows` rows for users, LRU every 2 steps."""
    data = load_spec(REPO / "configs/features/synthetic_managed.yaml").model_dump(mode="json", exclude_none=True)
    for t in data["tables"]:
        if t["name"] == "user":
            t.update(hash_buckets=user_rows, eviction={"policy": "lru", "interval_steps": 2})
        if t["name"] == "item":
            t["eviction"] = {"policy": "lru", "interval_steps": 2}
    path = tmp_path / "managed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)
