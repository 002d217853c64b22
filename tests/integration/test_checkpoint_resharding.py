"""Sharded checkpoints on spawned gloo ranks: save on 2 ranks, load on 1 and on 2 (DCP
resharding) with every value (tables, dense weights, optimizer state) equal to what was saved;
a crash before publication keeps the previous checkpoint."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from helpers.dist_utils import assemble, local_pieces, run_on_ranks
from helpers.tiny_model import MODEL, global_batch, tiny_spec
from pipeline.data.collate import collate
from pipeline.data.feature_spec import spec_from_dict
from pipeline.train import checkpoint
from pipeline.train.checkpoint import (
    CheckpointMismatchError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_shards,
    step_dir,
)
from pipeline.train.config import TrainConfig
from pipeline.train.dcp_reader import read_tensors
from pipeline.train.sharded_model import build_sharded_model

SAVED_TYPES = ["table_wise", "column_wise"]


def _build(sharding_type: str, seed: int, min_column_shard_dim: int = 4):
    torch.manual_seed(seed)  # a different init from the saved run, so loading has to change values
    return build_sharded_model(
        tiny_spec(),
        MODEL,
        TrainConfig(batch_size=32),
        torch.device("cpu"),
        sharding_type=sharding_type,
        min_column_shard_dim=min_column_shard_dim,
    )


def _load_error(path: str, sm) -> str | None:
    try:
        load_checkpoint(path, sm.model, sm.optimizer)
    except CheckpointMismatchError as e:
        return str(e)
    return None


def _train(sm, rank: int, world_size: int, steps: range) -> None:
    spec = tiny_spec()
    for step in steps:
        table = global_batch(step)
        per = table.num_rows // world_size
        loss, _ = sm.model(collate(table.slice(rank * per, per), spec))
        loss.backward()
        sm.optimizer.step()
        sm.optimizer.zero_grad()


def _pieces(sm) -> dict:
    return local_pieces({"model": sm.model.state_dict(), "optim": sm.optimizer.state_dict()})


def _save_worker(rank: int, world_size: int, root: str) -> dict:
    out = {}
    for sharding_type in SAVED_TYPES:
        sm = _build(sharding_type, seed=0)
        _train(sm, rank, world_size, range(2))
        save_checkpoint(os.path.join(root, sharding_type), sm.model, sm.optimizer, {"step": 2, "type": sharding_type})
        out[sharding_type] = _pieces(sm)
        if sharding_type == "table_wise":  # Ray Train's way: rank-local directories, merged by Ray
            save_shards(os.path.join(root, f"rank{rank}"), sm.model, sm.optimizer, {"step": 2, "type": sharding_type})
    return out


def _load_worker(rank: int, world_size: int, root: str) -> dict:
    out = {}
    for name, sharding_type in [*zip(SAVED_TYPES, SAVED_TYPES, strict=True), ("merged", "table_wise")]:
        sm = _build(sharding_type, seed=100 + rank)
        _train(sm, rank, world_size, range(5, 7))  # optimizer state exists and differs too
        before = _pieces(sm)
        extra = load_checkpoint(os.path.join(root, name), sm.model, sm.optimizer)
        out[name] = {"before": before, "after": _pieces(sm), "extra": extra}
    # Fused (table_wise) row-wise Adagrad state has other names than the data-parallel tables'.
    out["names_mismatch"] = _load_error(os.path.join(root, "table_wise"), _build("data_parallel", seed=0))
    # Saved with two column shards per dim-8 table; unsplit tables keep half the accumulators.
    out["shape_mismatch"] = _load_error(
        os.path.join(root, "column_wise"), _build("column_wise", seed=0, min_column_shard_dim=8)
    )
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ckpt"))
    per_rank = run_on_ranks(_save_worker, 2, root)
    merged = os.path.join(root, "merged")  # what Ray does with the workers' save_shards directories
    for rank in range(2):
        shutil.copytree(os.path.join(root, f"rank{rank}"), merged, dirs_exist_ok=True)
    expected = {t: assemble([r[t] for r in per_rank]) for t in SAVED_TYPES}
    return root, {**expected, "merged": expected["table_wise"]}


@pytest.mark.parametrize("load_world", [1, 2])
def test_load_on_another_world_size_restores_every_value(saved, load_world):
    root, expected = saved
    per_rank = run_on_ranks(_load_worker, load_world, root)
    for name in [*SAVED_TYPES, "merged"]:
        sharding_type = "table_wise" if name == "merged" else name
        want = expected[name]
        got = assemble([r[name]["after"] for r in per_rank])
        before = assemble([r[name]["before"] for r in per_rank])
        assert got.keys() == want.keys()
        assert any(k.startswith("optim/state/model.ebc") for k in want)  # fused table state is covered
        assert any(k.startswith("optim/state/model.dense") for k in want)  # dense Adam state is covered
        for key in want:
            assert torch.equal(got[key], want[key]), f"{name} on {load_world} rank(s): {key} differs"
        changed = [k for k in want if not torch.equal(before[k], want[k])]
        assert len(changed) > len(want) // 2, "the loading model already had the saved values"
        assert per_rank[0][name]["extra"] == {"step": 2, "type": sharding_type}
    names = per_rank[0]["names_mismatch"]
    assert names is not None and "data_parallel" in names and "'table_wise'" in names, names
    shapes = per_rank[0]["shape_mismatch"]
    assert shapes is not None and "momentum1: saved (128,), here (64,)" in shapes and "column shard" in shapes, shapes


def test_the_exports_reader_reassembles_column_shards_exactly(saved):
    """pipeline/train/dcp_reader.py: what the export reads without DCP's second copy, here from
    a checkpoint whose dim-8 tables were saved as two column shards each."""
    root, expected = saved
    want = {k.split("/", 1)[1]: v for k, v in expected["column_wise"].items() if k.startswith("model/model.")}
    assert any(k.startswith("model.ebc.") for k in want) and any(k.startswith("model.dense.") for k in want)
    got = read_tensors(os.path.join(root, "column_wise"), {f"model.{k}": v for k, v in want.items()})
    for key, value in want.items():
        assert torch.equal(got[f"model.{key}"], value), key


def _settings(spec) -> dict:
    """A run's settings as its extra.json records them (the config's parts that matter here)."""
    train = TrainConfig(batch_size=32).model_dump(mode="json")
    return {"config": {"model": MODEL.model_dump(mode="json"), "train": train}, "spec": spec.model_dump(mode="json")}


def _spec_with(edit) -> object:
    data = tiny_spec().model_dump(mode="json")
    edit(data)
    return spec_from_dict(data)


def _changed_settings_worker(rank: int, world_size: int, root: str) -> dict:
    path = os.path.join(root, "trained")
    sm = _build("table_wise", seed=0)
    _train(sm, rank, world_size, range(1))  # optimizer state to save
    save_checkpoint(path, sm.model, sm.optimizer, {"step": 1, **_settings(tiny_spec())})
    bigger = _spec_with(lambda d: d["tables"][2].update(hash_buckets=64))  # category: 32 rows -> 64
    resized = build_sharded_model(
        bigger, MODEL, TrainConfig(batch_size=32), torch.device("cpu"), sharding_type="table_wise"
    )
    try:
        load_checkpoint(path, resized.model, resized.optimizer, _settings(bigger))
        refused = None
    except CheckpointMismatchError as err:
        refused = {"message": str(err), "changed": err.changed}
    # New normalisation statistics change no tensor: the checkpoint loads as before.
    restat = _spec_with(lambda d: d["dense"][1].update(mean=700.0))
    fresh = _build("table_wise", seed=1)
    extra = load_checkpoint(path, fresh.model, fresh.optimizer, _settings(restat))
    return {
        "refused": refused,
        "loaded": assemble([_pieces(fresh)]),
        "saved": assemble([_pieces(sm)]),
        "step": extra["step"],
    }


def test_a_checkpoint_that_does_not_fit_names_the_settings_that_changed(tmp_path):
    [r] = run_on_ranks(_changed_settings_worker, 1, str(tmp_path))
    path = tmp_path / "trained"
    assert r["refused"] is not None, "a checkpoint with a 32-row table loaded into a 64-row one"
    assert r["refused"]["changed"] == ["spec.tables[category].hash_buckets: 32 there, 64 now"]
    message = r["refused"]["message"]
    assert message.startswith(
        f"{path} was trained with other settings than this run's (spec.tables[category].hash_buckets: 32 there, "
        "64 now), and its tensors do not fit this model: tensor shapes differ: "
    ), message
    assert "category.weight: saved (32, 4), here (64, 4)" in message and "column shard" not in message, message
    assert r["step"] == 1
    assert all(torch.equal(r["loaded"][k], v) for k, v in r["saved"].items())


class SimulatedCrash(RuntimeError):
    pass


def _crash_worker(rank: int, world_size: int, root: str) -> dict:
    path = step_dir(root, 1)
    sm = _build("table_wise", seed=0)
    _train(sm, rank, world_size, range(1))
    save_checkpoint(path, sm.model, sm.optimizer, {"step": 1})
    good = _pieces(sm)

    _train(sm, rank, world_size, range(1, 2))
    publish = checkpoint._publish
    checkpoint._publish = lambda *a: (_ for _ in ()).throw(SimulatedCrash("killed before the rename"))
    try:
        save_checkpoint(path, sm.model, sm.optimizer, {"step": 2})
        crashed = False
    except SimulatedCrash:
        crashed = True
    finally:
        checkpoint._publish = publish
    leftover = sorted(os.listdir(root))
    latest = latest_checkpoint(root)

    fresh = _build("table_wise", seed=7)
    extra_after_crash = load_checkpoint(path, fresh.model, fresh.optimizer)
    after_crash = _pieces(fresh)

    save_checkpoint(path, sm.model, sm.optimizer, {"step": 2})  # a complete save replaces it
    newer = _pieces(sm)
    fresh2 = _build("table_wise", seed=8)
    extra_replaced = load_checkpoint(path, fresh2.model, fresh2.optimizer)
    return {
        "crashed": crashed,
        "leftover": leftover,
        "latest": latest,
        "final_listing": sorted(os.listdir(root)),
        "good": good,
        "after_crash": after_crash,
        "extra_after_crash": extra_after_crash,
        "newer": newer,
        "replaced": _pieces(fresh2),
        "extra_replaced": extra_replaced,
    }


def test_crash_before_publication_keeps_the_previous_checkpoint(tmp_path):
    per_rank = run_on_ranks(_crash_worker, 2, str(tmp_path))
    r = per_rank[0]
    assert r["crashed"]
    name = os.path.basename(step_dir(str(tmp_path), 1))
    assert r["leftover"] == sorted([name, f".{name}.incomplete"])  # the half-published save is hidden
    assert r["latest"] == step_dir(str(tmp_path), 1)
    assert r["extra_after_crash"] == {"step": 1}
    good, after = assemble([p["good"] for p in per_rank]), assemble([p["after_crash"] for p in per_rank])
    assert all(torch.equal(after[k], good[k]) for k in good)

    newer, replaced = assemble([p["newer"] for p in per_rank]), assemble([p["replaced"] for p in per_rank])
    assert r["extra_replaced"] == {"step": 2}
    assert all(torch.equal(replaced[k], newer[k]) for k in newer)
    assert not all(torch.equal(newer[k], good[k]) for k in good)
    assert r["final_listing"] == [name]  # temporary and old directories are cleaned up
