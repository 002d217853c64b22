"""A managed table behind DistributedModelParallel on 2 gloo ranks (CPU): every rank profiles the
ids of both ranks' batches, so their mappings stay identical (and equal to one process's that
profiles each whole batch) while each trains on its own half; the mapping goes into the DCP
checkpoint, loads on 1 rank, and the export made from that checkpoint maps every id to the row
training last gave it."""

from __future__ import annotations

import os

import pyarrow as pa
import torch

from helpers.dist_utils import run_on_ranks
from helpers.tiny_model import MANAGED_ROWS as ROWS
from helpers.tiny_model import MODEL, managed_spec
from pipeline.data.collate import collate
from pipeline.data.synthetic import generate_table
from pipeline.train.checkpoint import load_checkpoint, save_checkpoint
from pipeline.train.config import JobConfig, TrainConfig
from pipeline.train.export import export_model, load_export
from pipeline.train.module import rec_model
from pipeline.train.sharded_model import build_sharded_model

STEPS, BATCH = 4, 48
MANAGED_KEYS = ("_mch_sorted_raw_ids", "_mch_remapped_ids_mapping", "_mch_last_access_iter")


def _batch(step: int) -> pa.Table:
    """Each step brings 8 new users (40..47 after 4 steps): more ids than the table's 15 rows."""
    table = generate_table(BATCH, seed=100 + step)
    users = pa.array([8 * step + i % 8 + 1000 for i in range(BATCH)], pa.int64())
    return table.set_column(table.schema.get_field_index("user_id"), "user_id", users)


def _probe() -> pa.Table:
    return pa.concat_tables([_batch(s) for s in range(STEPS)])


def _mapping(model) -> dict[str, torch.Tensor]:
    return {
        k.rsplit(".", 1)[1]: v.clone() for k, v in model.state_dict().items() if k.rsplit(".", 1)[1] in MANAGED_KEYS
    }


def _train_and_save(rank: int, world_size: int, root: str) -> dict:
    spec = managed_spec(policy="lru", interval=1)
    sm = build_sharded_model(
        spec, MODEL, TrainConfig(batch_size=BATCH), torch.device("cpu"), sharding_type="table_wise"
    )
    for step in range(STEPS):
        half = _batch(step).slice(rank * BATCH // 2, BATCH // 2)  # each rank its own rows
        loss, _ = sm.model(collate(half, spec))
        loss.backward()
        sm.optimizer.step()
        sm.optimizer.zero_grad()
    extra = {
        "config": JobConfig(model=MODEL, train=TrainConfig(batch_size=BATCH)).model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "step": STEPS,
    }
    save_checkpoint(os.path.join(root, "ckpt"), sm.model, sm.optimizer, extra)
    sm.model.eval()
    managed = sm.train_module.model.managed
    rows = managed(collate(_probe(), spec).sparse_features)["user_id"].values()
    return {"mapping": _mapping(sm.train_module.model), "rows": rows}


def _load(rank: int, world_size: int, root: str) -> dict:
    spec = managed_spec(policy="lru", interval=1)
    torch.manual_seed(5)
    sm = build_sharded_model(
        spec, MODEL, TrainConfig(batch_size=BATCH), torch.device("cpu"), sharding_type="table_wise"
    )
    load_checkpoint(os.path.join(root, "ckpt"), sm.model, sm.optimizer)
    return {"mapping": _mapping(sm.train_module.model)}


def test_ranks_share_one_mapping_that_the_checkpoint_and_the_export_carry(tmp_path):
    trained = run_on_ranks(_train_and_save, 2, str(tmp_path))
    for key, value in trained[0]["mapping"].items():
        assert torch.equal(value, trained[1]["mapping"][key]), key
    assert torch.equal(trained[0]["rows"], trained[1]["rows"])
    spec = managed_spec(policy="lru", interval=1)
    reference = rec_model(spec, MODEL).train()
    for step in range(STEPS):  # one process profiling both halves, in rank order, at every step
        reference.managed(collate(_batch(step), spec).sparse_features)
    for key, value in _mapping(reference).items():
        assert torch.equal(trained[0]["mapping"][key], value), key
    live = trained[0]["mapping"]["_mch_sorted_raw_ids"]
    assert (live != torch.iinfo(torch.int64).max).sum() == ROWS - 1  # the table filled up

    (loaded,) = run_on_ranks(_load, 1, str(tmp_path))
    for key, value in trained[0]["mapping"].items():
        assert torch.equal(loaded["mapping"][key], value), key

    export = export_model(str(tmp_path / "ckpt"), str(tmp_path / "export"))
    assert (tmp_path / "export" / "managed" / "user.safetensors").is_file()
    model, spec, _ = load_export(export)
    scored = model.managed(collate(_probe(), spec).sparse_features)["user_id"].values()
    assert torch.equal(scored, trained[0]["rows"])
    # The last 8 users (step 3, the most recent) hold rows of their own at scoring too.
    assert (scored[-BATCH:] < ROWS - 1).all()
