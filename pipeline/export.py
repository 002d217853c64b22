"""The exported model: what scoring loads on one machine, without the cluster.

    <dir>/weights.pt   unsharded tensors only (torch.save of {name: Tensor}); read back with
                       torch.load(weights_only=True), so no arbitrary object is unpickled
    <dir>/model.json   model config, feature spec, metrics, step: everything else, as JSON

Written to a temporary sibling and renamed, so an existing export is never half-replaced.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import torch

from pipeline.feature_spec import FeatureSpec, spec_from_dict
from ple_model import ModelConfig

FORMAT_VERSION = 1
WEIGHTS, META = "weights.pt", "model.json"


class ExportError(ValueError):
    pass


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_export(out_dir: str, state: dict[str, torch.Tensor], model_cfg: ModelConfig, spec: FeatureSpec,
                 metrics: Optional[dict] = None, extra: Optional[dict] = None) -> str:
    final = Path(out_dir)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / WEIGHTS)
    meta = {"format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model_config": model_cfg.model_dump(mode="json"), "spec": spec.model_dump(mode="json"),
            "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str))},
            **(extra or {})}
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    _replace_dir(tmp, final)
    return str(final)


def load_export(path: str):
    """(RecModel in eval mode, FeatureSpec, metadata dict). Clear error if `path` is not one."""
    from ple_model import RecModel

    p = Path(path)
    if not (p / META).is_file() or not (p / WEIGHTS).is_file():
        raise ExportError(f"{path}: not an exported model (expected {META} and {WEIGHTS})")
    meta = json.loads((p / META).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: export format {meta.get('format_version')}, this code reads {FORMAT_VERSION}")
    spec = spec_from_dict(meta["spec"], source=str(p / META))
    cfg = ModelConfig.model_validate(meta["model_config"])
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, cfg)
    state = torch.load(p / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), spec, meta


def export_model(checkpoint_dir: str, out_dir: str, metrics: Optional[dict] = None) -> str:
    """Gather a sharded training checkpoint into unsharded tensors (in this process, no
    process group: DCP reassembles every shard) and write it as an export."""
    import torch.distributed.checkpoint as dcp

    from pipeline.checkpoint import EXTRA_FILE
    from pipeline.config import JobConfig
    from ple_model import RecModel

    extra = json.loads((Path(checkpoint_dir) / EXTRA_FILE).read_text())
    cfg, spec = JobConfig.model_validate(extra["config"]), spec_from_dict(extra["spec"])
    model_cfg = cfg.model.model_copy(update={"num_tasks": len(spec.tasks)})
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, model_cfg)
    # The checkpoint holds TrainModule's state: RecModel's keys under "model.".
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    dcp.load({"model": state}, checkpoint_id=checkpoint_dir)
    weights = {k[len("model."):]: v for k, v in state.items()}
    return write_export(out_dir, weights, model_cfg, spec, metrics,
                        extra={"step": extra["step"], "checkpoint": str(checkpoint_dir),
                               "trained_days": list(cfg.data.train_days)})
