"""A managed table behind DistributedModelParallel on 2 gloo ranks (CPU): every rank profiles the
ids of both ranks' batches, so their mappings stay identical (and equal to one process's that
profiles each whole batch) while each trains on its own half; the mapping goes into the DCP
checkpoint, loads on 1 rank, and the export made from that checkpoint maps every id to the row
training last gave it. The ranks hold their ids back until a step evicts (or a checkpoint is
saved), then send them in one all-gather once its capacity has settled."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
import torch

from helpers.dist_utils import assemble, local_pieces, run_on_ranks
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
MANAGED_KEYS = ("_mch_sorted_raw_ids", "_mch_remapped_ids_mapping", "_mch_last_access_iter", "_current_iter_tensor")


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


def _counting_all_gathers() -> list[int]:
    """[the managed ids' all_gather calls so far] (ple_model/managed_ids.py's, counted)."""
    from ple_model import managed_ids

    calls, real = [0], managed_ids.dist.all_gather

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    managed_ids.dist.all_gather = counted
    return calls


def _train_and_save(rank: int, world_size: int, root: str, interval: int = 1, steps: int = STEPS) -> dict:
    spec = managed_spec(policy="lru", interval=interval)
    sm = build_sharded_model(
        spec, MODEL, TrainConfig(batch_size=BATCH), torch.device("cpu"), sharding_type="table_wise"
    )
    calls, gathers = _counting_all_gathers(), []
    for step in range(steps):
        half = _batch(step).slice(rank * BATCH // 2, BATCH // 2)  # each rank its own rows
        loss, _ = sm.model(collate(half, spec))
        loss.backward()
        sm.optimizer.step()
        sm.optimizer.zero_grad()
        gathers.append(calls[0])
    extra = {
        "config": JobConfig(model=MODEL, train=TrainConfig(batch_size=BATCH)).model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "step": steps,
    }
    save_checkpoint(os.path.join(root, "ckpt"), sm.model, sm.optimizer, extra)
    gathers.append(calls[0])
    sm.model.eval()
    managed = sm.train_module.model.managed
    rows = managed(collate(_probe(), spec).sparse_features)["user_id"].values()
    return {"mapping": _mapping(sm.train_module.model), "rows": rows, "gathers": gathers}


def _reference_mapping(interval: int, steps: int) -> dict[str, torch.Tensor]:
    """The mapping of one process profiling both halves of each step's batch, in rank order,
    at every step."""
    spec = managed_spec(policy="lru", interval=interval)
    reference = rec_model(spec, MODEL).train()
    for step in range(steps):
        reference.managed(collate(_batch(step), spec).sparse_features)
    return _mapping(reference)


def _load(rank: int, world_size: int, root: str, interval: int = 1) -> dict:
    spec = managed_spec(policy="lru", interval=interval)
    torch.manual_seed(5)
    sm = build_sharded_model(
        spec, MODEL, TrainConfig(batch_size=BATCH), torch.device("cpu"), sharding_type="table_wise"
    )
    load_checkpoint(os.path.join(root, "ckpt"), sm.model, sm.optimizer)
    return {"mapping": _mapping(sm.train_module.model)}


# Per step, each rank's count of ids in each of two tables: 14 and 9 ids, then within the
# capacity the first step sets (14 + a quarter = 17), until rank 0's 43 at step 3 outgrow it.
ID_COUNTS = [((5, 9), (7, 2)), ((6, 8), (3, 4)), ((10, 6), (2, 2)), ((40, 3), (1, 1)), ((4, 4), (20, 20))]


def _rank_ids(rank: int, step: int) -> list[torch.Tensor]:
    """Two tables' ids of `rank` at `step`, each id telling its rank, table and step."""
    return [torch.arange(n) + 1000 * rank + 100 * t + 10_000 * step for t, n in enumerate(ID_COUNTS[step][rank])]


def _gather_steps(rank: int, world_size: int) -> list[tuple[list[torch.Tensor], int]]:
    """[(the gathered ids, all_gather calls made)] per step, on this rank."""
    from ple_model import managed_ids

    calls = _counting_all_gathers()
    out, capacity = [], 0
    for step in range(len(ID_COUNTS)):
        calls[0] = 0
        gathered, capacity = managed_ids._all_gather_ids(_rank_ids(rank, step), capacity)
        out.append((gathered, calls[0]))
    return out


def test_one_all_gather_a_call_once_the_capacity_settles():
    ranks = run_on_ranks(_gather_steps, 2)
    for step in range(len(ID_COUNTS)):
        expected = [torch.cat([_rank_ids(r, step)[t] for r in range(2)]) for t in range(2)]
        for gathered, _ in (ranks[0][step], ranks[1][step]):
            assert all(torch.equal(g, e) for g, e in zip(gathered, expected, strict=True)), step
    # The counts alone first (capacity 0), then the ids; a second collective again at step 3 only.
    assert [calls for _, calls in ranks[0]] == [calls for _, calls in ranks[1]] == [2, 1, 1, 2, 1]


def test_ranks_share_one_mapping_that_the_checkpoint_and_the_export_carry(tmp_path):
    trained = run_on_ranks(_train_and_save, 2, str(tmp_path))
    for key, value in trained[0]["mapping"].items():
        assert torch.equal(value, trained[1]["mapping"][key]), key
    assert torch.equal(trained[0]["rows"], trained[1]["rows"])
    for key, value in _reference_mapping(interval=1, steps=STEPS).items():
        assert torch.equal(trained[0]["mapping"][key], value), key
    # Every step evicts, so every step gathers: the counts alone first (capacity 0), then once.
    assert trained[0]["gathers"] == trained[1]["gathers"] == [2, 3, 4, 5, 5]
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


def test_ids_held_back_until_an_eviction_give_the_mapping_of_per_step_profiling(tmp_path):
    """Eviction every 3 steps over 7: the ranks gather at steps 3 and 6, and the checkpoint
    gathers step 7's; the checkpoint then holds what profiling every step with both ranks' ids
    gives, step counter and last-access metadata included."""
    trained = run_on_ranks(_train_and_save, 2, str(tmp_path), 3, 7)
    assert trained[0]["gathers"] == trained[1]["gathers"] == [0, 0, 2, 2, 2, 3, 3, 4]
    reference = _reference_mapping(interval=3, steps=7)
    assert int(reference["_current_iter_tensor"]) == 7
    (loaded,) = run_on_ranks(_load, 1, str(tmp_path), 3)
    for key, value in reference.items():
        assert torch.equal(trained[0]["mapping"][key], value), key
        assert torch.equal(trained[1]["mapping"][key], value), key
        assert torch.equal(loaded["mapping"][key], value), key
    assert torch.equal(trained[0]["rows"], trained[1]["rows"])


# (sharding of every table, sparse optimizer): the reset reaches the shards and their optimizer
# state wherever the planner puts them: one rank's TBE, column shards on two ranks (an Adagrad
# accumulator per row in each), replicas updated by TableOptimizer; SGD keeps no state.
RESET_CASES = [
    ("table_wise", "rowwise_adagrad"),
    ("column_wise", "rowwise_adagrad"),
    ("table_column_wise", "rowwise_adagrad"),
    ("data_parallel", "rowwise_adagrad"),
    ("table_wise", "sgd"),
]
USER_WEIGHT = "model.ebc.embedding_bags.user.weight"


def _user_state(sm) -> dict:
    return {
        "weight": sm.model.state_dict()[USER_WEIGHT],
        "optimizer": sm.optimizer.state_dict()["state"].get(USER_WEIGHT, {}),
    }


def _train_and_reset(rank: int, world_size: int, sharding_type: str, optimizer: str) -> list[tuple]:
    """[(the user table and its optimizer state before the reset, after it, the rows reset)] per step."""
    from pipeline.train.reassigned_rows import reset_reassigned_rows, sharded_tables

    spec = managed_spec(policy="lru", interval=1)
    train = TrainConfig(batch_size=BATCH, sparse_optimizer=optimizer)
    sm = build_sharded_model(
        spec, MODEL, train, torch.device("cpu"), sharding_type=sharding_type, min_column_shard_dim=4
    )
    managed, out = sm.train_module.model.managed, []
    for step in range(1, STEPS + 1):
        half = _batch(step - 1).slice(rank * BATCH // 2, BATCH // 2)
        loss, _ = sm.model(collate(half, spec))
        loss.backward()
        sm.optimizer.step()
        sm.optimizer.zero_grad()
        before = local_pieces(_user_state(sm))
        reset = reset_reassigned_rows(managed, spec.embedding_bag_configs(), 0, step, sharded_tables(sm))
        out.append((before, local_pieces(_user_state(sm)), reset.get("user")))  # read back afresh
    return out


@pytest.mark.parametrize("sharding_type,optimizer", RESET_CASES)
def test_rows_handed_to_new_ids_start_afresh_in_every_shard(sharding_type, optimizer):
    from pipeline.train.reassigned_rows import reset_generator, reset_rows

    config = next(c for c in managed_spec().embedding_bag_configs() if c.name == "user")
    ranks = run_on_ranks(_train_and_reset, 2, sharding_type, optimizer)
    assert ranks[0][0][2] is not None  # the first step fills rows (and later ones evict)
    evicted_after_filling = 0
    for step, ((before0, after0, rows), (before1, after1, rows1)) in enumerate(zip(*ranks, strict=True), start=1):
        if rows is None:
            assert rows1 is None
            continue
        assert torch.equal(rows, rows1)
        before, after = assemble([before0, before1]), assemble([after0, after1])
        kept = torch.ones(ROWS, dtype=torch.bool)
        kept[rows] = False
        expected = before["weight"].clone()
        reset_rows(expected, {}, rows, config, reset_generator(0, step, "user"))
        assert torch.equal(after["weight"], expected)  # drawn afresh, the same whatever the sharding
        bound = config.get_weight_init_max()
        assert bool((after["weight"][rows].abs() <= bound).all()) and not torch.equal(after["weight"], before["weight"])
        states = [k for k in after if k.startswith("optimizer/") and after[k].dim() > 0]
        assert bool(states) == (optimizer != "sgd"), sorted(after)
        for key in states:
            per_row = after[key].view(-1, ROWS)  # a block of rows per column shard
            assert per_row.shape[0] == (2 if "column" in sharding_type else 1), key
            assert bool((per_row[:, rows] == 0).all()), key
            assert torch.equal(per_row[:, kept], before[key].view(-1, ROWS)[:, kept]), key
            assert bool((before[key].view(-1, ROWS)[:, rows] != 0).any()), key  # there was state to reset
        assert torch.equal(after["weight"][kept], before["weight"][kept])
        evicted_after_filling += step > 1
    assert evicted_after_filling > 0  # 8 new users a step in 16 rows: later steps evict too
