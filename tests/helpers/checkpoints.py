"""A training checkpoint written the way the training job writes one (DCP of TrainModule's state,
`model.<key>`, plus extra.json), without a cluster: for the export's tests and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
from pipeline.train.config import load_config
from ple_model import RecModel

REPO = Path(__file__).resolve().parents[2]


def demo_spec(rows: dict[str, int] | None = None, dim: int | None = None, extra_tables: int = 0) -> FeatureSpec:
    """The synthetic feature spec, with `rows` ({table: rows}) and `dim` (every table) changed,
    and `extra_tables` more tables t0, t1... (hashing the category column) beside its four."""
    data = yaml.safe_load((REPO / "configs/features/synthetic.yaml").read_text())
    for i in range(extra_tables):
        data["tables"].append({"name": f"t{i}", "hash_buckets": 1024, "dim": 8})
        data["sparse"].append({"name": f"f{i}", "column": "category", "table": f"t{i}", "type": "string"})
    spec = spec_from_dict(data)
    return spec.resized(rows or {}, dict.fromkeys((t.name for t in spec.tables), dim) if dim else None)


def write_checkpoint(path: Path, spec: FeatureSpec, seed: int = 0, step: int = 7) -> dict[str, torch.Tensor]:
    """A randomly initialised RecModel saved at `path` as a training checkpoint; returns its state."""
    import torch.distributed.checkpoint as dcp

    cfg = load_config(REPO / "configs/jobs/train_local.yaml", [])
    torch.manual_seed(seed)
    state = RecModel(spec.embedding_bag_configs(), spec.num_dense, cfg.model).state_dict()
    dcp.save({"model": {f"model.{k}": v for k, v in state.items()}}, checkpoint_id=str(path))
    extra = {"config": cfg.model_dump(mode="json"), "spec": spec.model_dump(mode="json"), "step": step}
    (path / "extra.json").write_text(json.dumps(extra))
    return state
