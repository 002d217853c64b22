"""Sharded checkpoints of model + optimizer with torch.distributed.checkpoint (DCP), published
atomically.

Layout of a checkpoint directory (e.g. <run>/step_000123):
    .metadata, __*_*.distcp   DCP: every rank's shards of {"model": ..., "optim": ...}
    extra.json                caller's metadata (step, config, ...), written by rank 0
    plan.json                 the sharding plan it was saved with (when the model is a DMP)

Atomic publication: all ranks write into the hidden sibling `.step_000123.incomplete`, then,
after a barrier, rank 0 renames it to the final name (moving a previous checkpoint of that
name aside first and deleting it afterwards). A crash at any point before the rename leaves
the previous checkpoint untouched; `latest_checkpoint` never returns a hidden directory.
`save_checkpoint` needs a directory every rank can write (a shared filesystem in multi-node
runs); `save_shards` writes rank-local directories that Ray Train merges and publishes itself.

Resharding: DCP saves each tensor with its global shape, so loading works with another world
size or table placement. What cannot move is optimizer state whose *shape* depends on the
plan: fbgemm's row-wise Adagrad keeps one accumulator per row per column shard, so a
column-wise table's state only loads into the same number of column shards; and a table's
state is named differently when fused (sharded) and data-parallel. `load_checkpoint` checks
shapes and names first and raises CheckpointMismatchError saying which and why: the feature
spec's or model's settings that changed since the checkpoint (its extra.json records them), else
the plan. It is bad input (exit status 78), not retried.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.tensor import DTensor
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from pipeline.common.config import differences
from pipeline.common.errors import BadInputError
from pipeline.common.files import fsync_path
from pipeline.train.sharding import describe_plan
from ple_model.managed_ids import ManagedIds

EXTRA_FILE = "extra.json"
PLAN_FILE = "plan.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


# What a checkpoint's tensors depend on, besides the sharding plan: the settings `extra.json`
# records (its "config" and "spec") that a mismatch is explained by.
SHAPING_TRAIN_KEYS = ("sparse_optimizer", "loss_balancing", "esmm", "sharding_type")


class CheckpointMismatchError(BadInputError):
    """The checkpoint cannot be loaded into this model/optimizer (names or shapes differ).
    `changed`: the feature spec's and model's settings that differ from the checkpoint's, the
    likely cause ([] when they are the same: then the sharding plan is)."""

    def __init__(self, message: str, changed: list[str] | None = None) -> None:
        super().__init__(message)
        self.changed = changed or []

    def __reduce__(self):
        return (self.__class__, (str(self), self.changed))


def listed(items: list[str], limit: int = 6) -> str:
    """The first `limit` of `items` (CheckpointMismatchError.changed, say), for a message."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def shaping_settings(settings: dict) -> dict:
    """The parts of a run's settings (`{"config": JobConfig dump, "spec": FeatureSpec dump}`, as
    `extra.json` records them) that its checkpoint's tensors depend on."""
    train = settings.get("config", {}).get("train", {})
    return {
        "spec": settings.get("spec"),
        "model": settings.get("config", {}).get("model"),
        "train": {key: train.get(key) for key in SHAPING_TRAIN_KEYS},
    }


def step_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step_{step:09d}")


def latest_checkpoint(root: str) -> str | None:
    """The complete `step_N` directory with the highest N under `root`, or None."""
    if not os.path.isdir(root):
        return None
    best: tuple[int, str] | None = None
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        # extra.json is written last before publication: its presence marks a complete checkpoint.
        if match and os.path.isfile(os.path.join(path, EXTRA_FILE)) and os.path.isfile(os.path.join(path, ".metadata")):
            step = int(match.group(1))
            if best is None or step > best[0]:
                best = (step, path)
    return best[1] if best else None


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {"model": model.state_dict(), "optim": optimizer.state_dict()}


def _siblings(path: str) -> tuple[str, str]:
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.incomplete"), os.path.join(parent, f".{name}.old")


def save_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict) -> None:
    """Collective: every rank calls it with the same `path`. `extra` must be JSON-serialisable."""
    final = os.path.abspath(path)
    tmp, old = _siblings(final)
    extra_json = json.dumps(extra)  # fail before writing anything if extra is not serialisable
    if _rank() == 0:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash
    _barrier()
    _write_incomplete(tmp, model, optimizer, extra_json)
    _publish(tmp, final, old)


def save_shards(directory: str, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict) -> None:
    """Collective: write this rank's part of a checkpoint into `directory`, which may be a
    different, rank-local directory on every rank (DCP names each rank's file uniquely; rank 0
    adds .metadata, extra.json and plan.json). No publication step: for Ray Train, which
    uploads every worker's directory into one checkpoint and registers it only once all workers
    have reported. The merged directory loads with `load_checkpoint`."""
    os.makedirs(directory, exist_ok=True)
    _write_incomplete(directory, model, optimizer, json.dumps(extra))


def _write_incomplete(tmp: str, model: nn.Module, optimizer: torch.optim.Optimizer, extra_json: str) -> None:
    for module in model.modules():
        if isinstance(module, ManagedIds):
            module.flush_profile()  # collective: the ids it held back, profiled before the state is read
    dcp.save(_state(model, optimizer), checkpoint_id=tmp)  # collective; rank 0 writes .metadata last
    if _rank() == 0:
        if isinstance(model, DistributedModelParallel):
            _write_json(os.path.join(tmp, PLAN_FILE), json.dumps(describe_plan(model.plan)))
        _write_json(os.path.join(tmp, EXTRA_FILE), extra_json)
    _barrier()  # every rank's shards are on disk before the rename


def _publish(tmp: str, final: str, old: str) -> None:
    if _rank() == 0:
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(final):
            os.rename(final, old)  # never delete the good checkpoint before the new one is in place
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        fsync_path(os.path.dirname(final), directory=True)
    _barrier()


def _write_json(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# -- loading -----------------------------------------------------------------------------------
def saved_sharding_types(path: str) -> dict[str, str] | None:
    """{table: sharding type} a checkpoint was saved with, or None (not a sharded checkpoint).
    Planning a resume with the same types keeps the optimizer state's names and shapes, so that
    it loads on another number of workers."""
    plan_file = os.path.join(path, PLAN_FILE)
    if not os.path.isfile(plan_file):
        return None
    with open(plan_file) as f:
        return {table: p["sharding_type"] for module in json.load(f).values() for table, p in module.items()}


def _materialize_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """torch optimizers create state lazily at their first step, but DCP loads in place into
    existing tensors: create it with a zero-gradient step (overwritten by the load)."""
    optims = optimizer.optimizers if isinstance(optimizer, CombinedOptimizer) else [("", optimizer)]
    for _, opt in optims:
        if isinstance(opt, KeyedOptimizerWrapper) and len(opt.state) < len(opt.params):
            opt.init_state()
            opt.zero_grad()


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _check_compatible(path: str, state: dict[str, Any], settings: dict | None) -> None:
    saved = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    missing, wrong = [], []
    for key, value in _flatten(state).items():
        if not isinstance(value, torch.Tensor):
            continue
        if key not in saved:
            missing.append(key)
        elif isinstance(meta := saved[key], TensorStorageMetadata):
            size = value.size() if isinstance(value, (ShardedTensor, DTensor)) else value.shape
            if tuple(meta.size) != tuple(size):
                wrong.append(f"{key}: saved {tuple(meta.size)}, here {tuple(size)}")
    if not wrong and not missing:
        return
    changed = _changed_settings(path, settings)
    shown = 2 if changed else 5  # the settings say why; a few tensors say what
    what = (
        f"tensor shapes differ: {listed(wrong, shown)}" if wrong else f"not in the checkpoint: {listed(missing, shown)}"
    )
    if changed:
        raise CheckpointMismatchError(
            f"{path} was trained with other settings than this run's ({listed(changed)}), "
            f"and its tensors do not fit this model: {what}.",
            changed,
        )
    kinds = saved_sharding_types(path)
    why = (
        "Row-wise Adagrad state has one accumulator per row per column shard, so column-wise sharded tables "
        "only load into a plan with the same column shards (same sharding type and shard widths)."
        if wrong
        else "Optimizer state of a table is stored under different names when the table is fused (sharded) "
        "and when it is data_parallel."
    )
    plan_note = f" The checkpoint's tables were sharded as {kinds}." if kinds else ""
    raise CheckpointMismatchError(f"{path}: {what}. {why}{plan_note}")


def _changed_settings(path: str, settings: dict | None) -> list[str]:
    """The shaping settings (see shaping_settings) where `path`'s differ from `settings`; []
    without `settings` or a record of the checkpoint's."""
    try:
        with open(os.path.join(path, EXTRA_FILE)) as f:
            trained = json.load(f)
    except (OSError, ValueError):
        return []
    if settings is None or "config" not in trained or "spec" not in trained:
        return []
    return differences(shaping_settings(trained), shaping_settings(settings))


def load_checkpoint(
    path: str, model: nn.Module, optimizer: torch.optim.Optimizer, settings: dict | None = None
) -> dict:
    """Collective: load a checkpoint saved by `save_checkpoint` (any world size / compatible plan)
    into `model` and `optimizer` in place; returns its `extra`. `settings` (this run's, as
    `extra.json` records them) lets a CheckpointMismatchError name the settings that changed."""
    _materialize_optimizer_state(optimizer)
    state = _state(model, optimizer)
    _check_compatible(path, state, settings)
    dcp.load(state, checkpoint_id=path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    with open(os.path.join(path, EXTRA_FILE)) as f:
        return json.load(f)
