"""The exported model: what scoring loads on one machine, without the cluster.

    <dir>/weights.pt   unsharded tensors only (torch.save of {name: Tensor}); read back with
                       torch.load(weights_only=True), so no arbitrary object is unpickled
    <dir>/model.json   model config, feature spec, metrics, step: everything else, as JSON

Written to a temporary sibling and renamed, so an existing export is never half-replaced.

`version` (in model.json) identifies the model's content: a hash of weights.pt and of the model
config + feature spec, so re-exporting the same weights gives the same version and any change
to weights or feature mapping gives another. Scoring stamps it on every output row.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
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


def write_export(
    out_dir: str,
    state: dict[str, torch.Tensor],
    model_cfg: ModelConfig,
    spec: FeatureSpec,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> str:
    final = Path(out_dir)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp / WEIGHTS)
    model_json, spec_json = model_cfg.model_dump(mode="json"), spec.model_dump(mode="json")
    meta = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_config": model_json,
        "spec": spec_json,
        "version": content_version(tmp / WEIGHTS, model_json, spec_json),
        "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str))},
        **(extra or {}),
    }
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    _replace_dir(tmp, final)
    return str(final)


def content_version(weights: Path, model_config: dict, spec: dict) -> str:
    """16 hex digits of sha256(weights.pt bytes, canonical JSON of model config and spec)."""
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps({"model_config": model_config, "spec": spec}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def read_export_meta(path: str) -> dict:
    """model.json of an export, checked to be one (no weights loaded); adds `version` when an
    older export lacks it (computed the same way write_export does)."""
    p = Path(path)
    if not (p / META).is_file() or not (p / WEIGHTS).is_file():
        raise ExportError(f"{path}: not an exported model (expected {META} and {WEIGHTS})")
    try:
        meta = json.loads((p / META).read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable {META}: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: export format {meta.get('format_version')}, this code reads {FORMAT_VERSION}")
    for key in ("model_config", "spec"):
        if key not in meta:
            raise ExportError(f"{path}: {META} has no '{key}'")
    if "version" not in meta:
        meta["version"] = content_version(p / WEIGHTS, meta["model_config"], meta["spec"])
    return meta


def check_export(path: str) -> tuple[FeatureSpec, dict]:
    """(spec, meta) of an export after checking, without reading the tensors' data, that
    weights.pt holds exactly the tensors (names, shapes) the model config and spec describe.
    For drivers that must reject a bad model before starting work, without the memory of
    loading it (the weights are memory-mapped; embedding tables stay on disk)."""
    from ple_model import RecModel

    meta = read_export_meta(path)
    spec = spec_from_dict(meta["spec"], source=str(Path(path) / META))
    try:
        cfg = ModelConfig.model_validate(meta["model_config"])
    except ValueError as e:
        raise ExportError(f"{path}: invalid model_config in {META}: {e}") from None
    expected = {
        k: tuple(v.shape)
        for k, v in RecModel(spec.embedding_bag_configs(), spec.num_dense, cfg, device="meta").state_dict().items()
    }
    try:
        state = torch.load(Path(path) / WEIGHTS, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises several types for a corrupt or truncated file
        raise ExportError(f"{path}: unreadable {WEIGHTS}: {e}") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = [f"{k}: {got[k]} vs {expected[k]}" for k in expected if k in got and got[k] != expected[k]]
        raise ExportError(
            f"{path}: {WEIGHTS} does not match {META} (missing {missing[:3]}, unexpected "
            f"{extra[:3]}, shape mismatches {shapes[:3]})"
        )
    return spec, meta


def load_export(path: str):
    """(RecModel in eval mode, FeatureSpec, metadata dict). Clear error if `path` is not one."""
    from ple_model import RecModel

    p = Path(path)
    meta = read_export_meta(path)
    spec = spec_from_dict(meta["spec"], source=str(p / META))
    cfg = ModelConfig.model_validate(meta["model_config"])
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, cfg)
    state = torch.load(p / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), spec, meta


def export_model(checkpoint_dir: str, out_dir: str, metrics: dict | None = None) -> str:
    """Gather a sharded training checkpoint into unsharded tensors (in this process, no
    process group: DCP reassembles every shard) and write it as an export."""
    import torch.distributed.checkpoint as dcp

    from pipeline.train.checkpoint import EXTRA_FILE
    from pipeline.train.config import JobConfig
    from ple_model import RecModel

    extra = json.loads((Path(checkpoint_dir) / EXTRA_FILE).read_text())
    cfg, spec = JobConfig.model_validate(extra["config"]), spec_from_dict(extra["spec"])
    model_cfg = cfg.model
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, model_cfg)
    # The checkpoint holds TrainModule's state: RecModel's keys under "model.".
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    dcp.load({"model": state}, checkpoint_id=checkpoint_dir)
    weights = {k[len("model.") :]: v for k, v in state.items()}
    return write_export(
        out_dir,
        weights,
        model_cfg,
        spec,
        metrics,
        extra={"step": extra["step"], "checkpoint": str(checkpoint_dir), "trained_days": list(cfg.data.train_days)},
    )
