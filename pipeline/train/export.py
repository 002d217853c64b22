"""The exported model: what scoring loads on one machine, without the cluster.

    <dir>/model.json                    model config, feature spec, metrics, step, weight files
    <dir>/dense.safetensors             every tensor but the embedding tables
    <dir>/tables/<table>.safetensors    one embedding table each
    <dir>/managed/<table>.safetensors   a managed table's id mapping (ple_model/managed_ids.py)

safetensors holds tensors without pickle, and its files can be memory-mapped: load_export maps
them read-only and the model's parameters *are* the mapped tensors, so every scoring actor on a
node shares one copy of the tables in the page cache instead of holding its own. export_model
writes the tables one at a time from the training checkpoint, so the exporting process holds
one table at a time, never the whole model: at its peak about the largest table, as the
checkpoint's tensors are read without DCP's second copy (pipeline/train/dcp_reader.py).

Written to a temporary sibling and renamed, so an existing export is never half-replaced.
Format 1 (one `weights.pt`, a torch.save file) still loads.

`version` (in model.json) identifies the model's content: a hash of the weight files and of the
model config + feature spec, so re-exporting the same weights gives the same version and any
change to weights or feature mapping gives another. Scoring stamps it on every output row.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.common.files import temp_name
from pipeline.data.feature_spec import FeatureSpec, spec_from_dict
from ple_model import ModelConfig

if TYPE_CHECKING:
    from ple_model import RecModel

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
META, DENSE, TABLES, MANAGED = "model.json", "dense.safetensors", "tables", "managed"
LEGACY_WEIGHTS = "weights.pt"  # format 1
TABLE_PREFIX = "ebc.embedding_bags."  # RecModel's embedding tables: <prefix><table>.weight
MANAGED_PREFIX = "managed.tables."  # a managed table's id mapping: <prefix><table>.<buffer>


class ExportError(ValueError):
    pass


def weight_files(keys: list[str]) -> dict[str, list[str]]:
    """{file relative to the export: the state-dict keys it holds}: one file per embedding
    table, one per managed table's id mapping (3 int64 per row), the rest together. The order
    is the content version's."""
    files = {DENSE: [k for k in keys if not k.startswith((TABLE_PREFIX, MANAGED_PREFIX))]}
    for prefix, folder in ((TABLE_PREFIX, TABLES), (MANAGED_PREFIX, MANAGED)):
        for key in keys:
            if key.startswith(prefix):
                files.setdefault(f"{folder}/{key[len(prefix) :].split('.')[0]}.safetensors", []).append(key)
    return files


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _write(
    out_dir: str,
    files: Iterator[tuple[str, dict[str, torch.Tensor]]],
    model_cfg: ModelConfig,
    spec: FeatureSpec,
    metrics: dict | None,
    extra: dict | None,
) -> str:
    """Write each (file, tensors) as it comes (the caller may produce them one at a time),
    then model.json, then publish the directory."""
    from safetensors.torch import save_file

    final = Path(out_dir)
    tmp = Path(temp_name(final))
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / TABLES).mkdir(parents=True)
    names = []
    for name, tensors in files:
        (tmp / name).parent.mkdir(exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))
        names.append(name)
        del tensors  # a table's memory goes before the next one is read
    model_json, spec_json = model_cfg.model_dump(mode="json"), spec.model_dump(mode="json")
    meta = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model_config": model_json,
        "spec": spec_json,
        "weights": names,
        "version": content_version([tmp / n for n in names], model_json, spec_json),
        "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str))},
        **(extra or {}),
    }
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    _replace_dir(tmp, final)
    return str(final)


def write_export(
    out_dir: str,
    state: dict[str, torch.Tensor],
    model_cfg: ModelConfig,
    spec: FeatureSpec,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> str:
    """Export a RecModel state dict held in memory (one-process runs, tests, benchmarks)."""
    files = ((name, {k: state[k] for k in keys}) for name, keys in weight_files(list(state)).items())
    return _write(out_dir, files, model_cfg, spec, metrics, extra)


def content_version(weights: list[Path], model_config: dict, spec: dict) -> str:
    """16 hex digits of sha256(the weight files' bytes in order, canonical JSON of model config
    and spec)."""
    h = hashlib.sha256()
    for path in weights:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    h.update(json.dumps({"model_config": model_config, "spec": spec}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _weight_paths(p: Path, meta: dict) -> list[Path]:
    return [p / LEGACY_WEIGHTS] if meta["format_version"] == 1 else [p / n for n in meta["weights"]]


def read_export_meta(path: str) -> dict:
    """model.json of an export, checked to be one (no weights loaded); adds `version` when an
    older export lacks it (computed the same way write_export does)."""
    p = Path(path)
    if not (p / META).is_file():
        raise ExportError(f"{path}: not an exported model (expected {META} and its weight files)")
    try:
        meta = json.loads((p / META).read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable {META}: {e}") from None
    if meta.get("format_version") not in READABLE_FORMATS:
        raise ExportError(
            f"{path}: export format {meta.get('format_version')}, this code reads {list(READABLE_FORMATS)}: "
            "export the training checkpoint again with pipeline.train.export.export_model(<checkpoint>, <export dir>)"
        )
    for key in ("model_config", "spec", *(("weights",) if meta["format_version"] == 2 else ())):
        if key not in meta:
            raise ExportError(f"{path}: {META} has no '{key}'")
    missing = [str(w.relative_to(p)) for w in _weight_paths(p, meta) if not w.is_file()]
    if missing:
        raise ExportError(f"{path}: not an exported model (missing {', '.join(missing[:3])})")
    if "version" not in meta:
        meta["version"] = content_version(_weight_paths(p, meta), meta["model_config"], meta["spec"])
    return meta


def _mapped_tensors(p: Path, meta: dict) -> dict[str, torch.Tensor]:
    """Every tensor of the export, memory-mapped read-only from its file (no data read yet)."""
    if meta["format_version"] == 1:
        return torch.load(p / LEGACY_WEIGHTS, map_location="cpu", weights_only=True, mmap=True)
    from safetensors import safe_open

    state = {}
    for name in meta["weights"]:
        with safe_open(str(p / name), framework="pt") as f:
            state.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open is no dict)
    return state


def _model_parts(path: str, meta: dict) -> tuple[FeatureSpec, RecModel]:
    """(FeatureSpec, RecModel on the meta device: its keys and shapes, no memory)."""
    from pipeline.train.module import rec_model

    spec = spec_from_dict(meta["spec"], source=str(Path(path) / META))
    try:
        cfg = ModelConfig.model_validate(meta["model_config"])
    except ValueError as e:
        raise ExportError(f"{path}: invalid model_config in {META}: {e}") from None
    return spec, rec_model(spec, cfg, device="meta", managed_device="meta")


def _load_checked(path: str) -> tuple[FeatureSpec, dict, RecModel, dict[str, torch.Tensor]]:
    meta = read_export_meta(path)
    spec, model = _model_parts(path, meta)
    try:
        state = _mapped_tensors(Path(path), meta)
    except Exception as e:  # torch and safetensors raise several types for a corrupt or truncated file
        names = LEGACY_WEIGHTS if meta["format_version"] == 1 else "weight files"
        raise ExportError(f"{path}: unreadable {names}: {e}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = [f"{k}: {got[k]} vs {expected[k]}" for k in expected if k in got and got[k] != expected[k]]
        raise ExportError(
            f"{path}: the weights do not match {META} (missing {missing[:3]}, unexpected "
            f"{extra[:3]}, shape mismatches {shapes[:3]})"
        )
    return spec, meta, model, state


def check_export(path: str) -> tuple[FeatureSpec, dict]:
    """(spec, meta) of an export after checking, without reading the tensors' data, that its
    weight files hold exactly the tensors (names, shapes) the model config and spec describe.
    For drivers that must reject a bad model before starting work, without the memory of
    loading it (the weights are memory-mapped; embedding tables stay on disk)."""
    spec, meta, _, _ = _load_checked(path)
    return spec, meta


def load_export(path: str):
    """(RecModel in eval mode, FeatureSpec, metadata dict). Clear error if `path` is not one.
    The parameters are the export's memory-mapped tensors (copy-on-write): processes that load
    the same export share its pages; move the model to another device to get a private copy."""
    spec, meta, model, state = _load_checked(path)
    # Built on the meta device and assigned the mapped tensors: nothing allocated twice, and the
    # managed mapping not re-sorted in place (which would copy it into this process).
    model.assign_state(state)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ExportError(f"{path}: the weights leave {left[:3]} of the model unset")
    return model.eval(), spec, meta


def _checkpoint_tables(checkpoint_dir: str, model: RecModel) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """Each export file's tensors read from a DCP checkpoint, one file at a time (only the
    requested keys, their shards reassembled; pipeline/train/dcp_reader.py keeps one copy)."""
    from pipeline.train.dcp_reader import read_tensors

    shapes = model.state_dict()  # meta tensors: shapes and dtypes
    for name, keys in weight_files(list(shapes)).items():
        # The checkpoint holds TrainModule's state under "model", RecModel's keys under "model.".
        part = read_tensors(checkpoint_dir, {f"model.model.{k}": shapes[k] for k in keys})
        yield name, {k[len("model.model.") :]: v for k, v in part.items()}
        del part  # before the next file is read: one table in memory at a time


def export_model(checkpoint_dir: str, out_dir: str, metrics: dict | None = None) -> str:
    """Gather a sharded training checkpoint into unsharded tensors (in this process, no
    process group) and write it as an export, one embedding table at a time."""
    from pipeline.train.checkpoint import EXTRA_FILE
    from pipeline.train.config import JobConfig
    from pipeline.train.module import rec_model

    extra = json.loads((Path(checkpoint_dir) / EXTRA_FILE).read_text())
    cfg, spec = JobConfig.model_validate(extra["config"]), spec_from_dict(extra["spec"])
    model = rec_model(spec, cfg.model, device="meta", managed_device="meta")
    return _write(
        out_dir,
        _checkpoint_tables(checkpoint_dir, model),
        cfg.model,
        spec,
        metrics,
        extra={"step": extra["step"], "checkpoint": str(checkpoint_dir), "trained_days": list(cfg.data.train_days)},
    )
