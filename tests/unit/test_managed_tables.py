"""Managed-collision tables in one process (ple_model/managed_ids.py, `collision: managed` in the
spec): raw ids from the collate, admission and eviction as the table fills, eval that only
remaps, a state-dict round trip (what checkpoints and exports carry), a warm start that admits a
new day's ids, and the turnover counts."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from helpers.tiny_model import MANAGED_ROWS as ROWS
from helpers.tiny_model import MODEL, managed_spec, tiny_spec
from pipeline.data.collate import collate
from pipeline.data.feature_spec import FeatureSpecError, spec_from_dict
from pipeline.data.id_mapping import MISSING_RAW_ID
from pipeline.data.synthetic import SyntheticConfig, generate_table
from pipeline.train.module import rec_model
from ple_model.managed_ids import FREE_SLOT, id_turnover


def _day(users: range, seed: int) -> pa.Table:
    """Impressions whose user ids are `users`, one each, in a shuffled order."""
    table = generate_table(len(users), seed=seed, config=SyntheticConfig(num_users=10, num_items=20))
    ids = torch.tensor(list(users))[torch.randperm(len(users), generator=torch.Generator().manual_seed(seed))]
    return table.set_column(table.schema.get_field_index("user_id"), "user_id", pa.array(ids.numpy()))


def _rows(model, table: pa.Table, spec) -> torch.Tensor:
    """The rows the model maps `table`'s user ids to (profiling them first in train mode)."""
    batch = collate(table, spec)
    return model.managed(batch.sparse_features)["user_id"].values()


def test_spec_checks_where_managed_applies():
    data = managed_spec().model_dump(mode="json")
    data["tables"][0].update(hash_buckets=None, vocab_size=ROWS)
    with pytest.raises(FeatureSpecError, match=r"tables\[0\]: collision .managed.*needs hash_buckets"):
        spec_from_dict(data)
    data = tiny_spec().model_dump(mode="json")
    data["tables"][2]["eviction"] = {"policy": "lfu"}
    with pytest.raises(FeatureSpecError, match=r"tables\[2\]: eviction applies to collision: managed only"):
        spec_from_dict(data)


def test_collate_gives_managed_tables_raw_ids_and_missing_ids_one_reserved_id():
    spec = managed_spec(missing="default")
    table = generate_table(50, seed=0)
    users = table.column("user_id").to_numpy()
    ids = collate(table, spec).sparse_features["user_id"].values()
    assert (ids >= 0).all() and (ids < FREE_SLOT).all()
    assert len(set(ids.tolist())) == len(set(users.tolist()))  # one raw id per distinct id
    assert (ids > ROWS).any()  # raw ids, not rows
    with_null = table.set_column(1, "user_id", pa.array([None] + users[1:].tolist(), pa.int64()))
    ids_null = collate(with_null, spec).sparse_features["user_id"].values()
    assert ids_null[0] == MISSING_RAW_ID and torch.equal(ids_null[1:], ids[1:])
    # No reserved row is added to a managed table: the mapping's last row takes unmapped ids.
    assert {c.name: c.num_embeddings for c in spec.table_configs()}["user"] == ROWS


def test_a_filling_table_admits_evicts_and_remaps_alike_after_a_state_dict_round_trip():
    spec = managed_spec(policy="lru")
    model = rec_model(spec, MODEL).train()
    day1 = _day(range(1000, 1010), seed=1)
    before = model.managed.live_ids()
    first = _rows(model, day1, spec)
    assert len(set(first.tolist())) == 10 and (first < ROWS - 1).all()  # 10 ids, 15 free rows: one each
    assert id_turnover(before, model.managed.live_ids())["user"] == {"admitted": 10, "evicted": 0, "live": 10}
    assert torch.equal(_rows(model, day1, spec), first)  # seen again: the same rows

    # 10 new ids, 5 free rows: LRU evicts the 5 least recently seen old ids for the other 5.
    after_day1 = model.managed.live_ids()
    day2 = _day(range(5000, 5010), seed=2)
    _rows(model, day2, spec)
    turnover = id_turnover(after_day1, model.managed.live_ids())["user"]
    assert turnover == {"admitted": 10, "evicted": 5, "live": ROWS - 1}

    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mapped = _rows(model, day2, spec)
    assert (mapped < ROWS - 1).all() and len(set(mapped.tolist())) == 10  # a row of its own each
    unseen = _rows(model, _day(range(9000, 9003), seed=3), spec)
    assert unseen.tolist() == [ROWS - 1] * 3  # eval admits nothing: the last row
    assert id_turnover(model.managed.live_ids(), model.managed.live_ids())["user"]["admitted"] == 0

    reloaded = rec_model(spec, MODEL)
    reloaded.load_state_dict(state)
    assert torch.equal(_rows(reloaded.eval(), day2, spec), mapped)

    # A batch used twice (validation batches are cached) maps the same way the second time.
    batch = collate(day2, spec)
    first_pass = reloaded(batch.sparse_features, batch.dense_features)
    assert torch.equal(reloaded(batch.sparse_features, batch.dense_features), first_pass)
    assert torch.equal(reloaded.managed(batch.sparse_features)["user_id"].values(), mapped)


def test_a_warm_start_admits_the_new_days_ids_into_the_mapping_it_loaded():
    spec = managed_spec(policy="lfu", interval=2)
    yesterday = rec_model(spec, MODEL).train()
    for seed in (1, 2):  # two steps: one eviction interval
        _rows(yesterday, _day(range(100, 108), seed=seed), spec)
    old = yesterday.managed.live_ids()
    assert old["user"].numel() == 8

    today = rec_model(spec, MODEL)
    today.load_state_dict(yesterday.state_dict())
    assert torch.equal(today.managed.live_ids()["user"], old["user"])
    today.train()
    for seed in (3, 4):
        _rows(today, _day(range(200, 205), seed=seed), spec)
    assert id_turnover(old, today.managed.live_ids())["user"] == {"admitted": 5, "evicted": 0, "live": 13}


def test_a_managed_model_trains_end_to_end():
    spec = managed_spec()
    model = rec_model(spec, MODEL).train()
    batch = collate(generate_table(64, seed=0), spec)
    logits = model(batch.sparse_features, batch.dense_features)
    logits.sum().backward()
    user_grad = model.ebc.embedding_bags["user"].weight.grad
    assert user_grad is not None and user_grad.abs().sum() > 0


def test_turnover_metrics_round_trip_into_the_jobs_summary_line():
    from pipeline.train.id_turnover import describe_turnover, turnover_from_metrics, turnover_metrics

    spec = managed_spec(policy="lru")
    model = rec_model(spec, MODEL).train()
    _rows(model, _day(range(1000, 1010), seed=1), spec)
    metrics = {"val/ctr/auc": 0.7, **turnover_metrics(model, init_from=None)}
    assert metrics["ids/user/admitted"] == metrics["ids/user/live"] == 10 and metrics["ids/user/rows"] == ROWS - 1
    turnover = turnover_from_metrics(metrics)
    assert turnover == {"user": {"admitted": 10, "evicted": 0, "live": 10, "rows": ROWS - 1}}
    assert describe_turnover(turnover) == f"user: 10 ids admitted, 0 evicted, 10 of {ROWS - 1} rows in use"
    assert turnover_metrics(rec_model(tiny_spec(), MODEL), init_from=None) == {}  # no managed table


def test_a_run_shorter_than_the_eviction_interval_is_told_it_admits_nothing():
    from pipeline.train.id_turnover import short_run_warnings

    spec = managed_spec(interval=50)
    assert short_run_warnings(spec, 49) == [
        "managed table user: this run's 49 steps are fewer than its eviction interval (50 steps), "
        "so it admits no id; lower eviction.interval_steps"
    ]
    assert short_run_warnings(spec, 50) == short_run_warnings(spec, None) == short_run_warnings(tiny_spec(), 1) == []


def test_an_export_loads_its_mapping_as_saved_and_sorts_only_an_unsorted_one(tmp_path, monkeypatch):
    """load_export assigns a sorted mapping as it is: TorchRec's load hook would re-sort it in
    place, writing every page of the memory-mapped file into the process (a private copy per
    scoring actor). A mapping that is not sorted still loads, through that re-sort."""
    from torchrec.modules.mc_modules import MCHManagedCollisionModule

    from pipeline.train.export import load_export, write_export

    spec = managed_spec(policy="lru")
    model = rec_model(spec, MODEL).train()
    day = _day(range(1000, 1012), seed=1)
    _rows(model, day, spec)
    model.eval()
    mapped = _rows(model, day, spec)
    state = model.state_dict()
    prefix = "managed.tables.user."
    assert (state[prefix + "_mch_sorted_raw_ids"] != FREE_SLOT).sum() == 12

    sorts = []  # the pinned TorchRec still re-sorts through this method: the reason for assign_state
    original_sort = MCHManagedCollisionModule._sort_mch_buffers
    monkeypatch.setattr(MCHManagedCollisionModule, "_sort_mch_buffers", lambda m: sorts.append(original_sort(m)))
    loaded, _, _ = load_export(write_export(str(tmp_path / "sorted"), state, MODEL, spec))
    assert sorts == []
    assert torch.equal(_rows(loaded, day, spec), mapped)
    for key, value in loaded.managed.state_dict(prefix="managed.").items():
        assert torch.equal(value, state[key]), key
    # The eviction policy's view of the metadata is the loaded buffer, not the one it replaced.
    mch = loaded.managed.tables["user"]
    assert mch._mch_metadata["last_access_iter"] is mch._mch_last_access_iter
    _assert_like_a_module_built_on_the_cpu(loaded, state, spec)

    # The same mapping with its rows in another order (the row of each id unchanged).
    shuffled = dict(state)
    order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(0))
    for buffer in ("_mch_sorted_raw_ids", "_mch_remapped_ids_mapping", "_mch_last_access_iter"):
        shuffled[prefix + buffer] = state[prefix + buffer][order].contiguous()
    assert not torch.equal(shuffled[prefix + "_mch_sorted_raw_ids"], state[prefix + "_mch_sorted_raw_ids"])
    sorted_before = len(sorts)  # the CPU-built reference above sorted once too, in its load hook
    loaded, _, _ = load_export(write_export(str(tmp_path / "shuffled"), shuffled, MODEL, spec))
    assert len(sorts) == sorted_before + 1
    assert torch.equal(_rows(loaded, day, spec), mapped)
    assert torch.equal(
        loaded.managed.state_dict()["tables.user._mch_sorted_raw_ids"], state[prefix + "_mch_sorted_raw_ids"]
    )
    _assert_like_a_module_built_on_the_cpu(loaded, state, spec)


def _assert_like_a_module_built_on_the_cpu(loaded, state: dict, spec) -> None:
    """An export's managed module is built on the meta device (its mapping is never allocated
    before the mapped one replaces it) and takes what its state dict lacks from the table's size:
    every buffer, saved or not, equals a module built on the CPU that loads the same state."""
    reference = rec_model(spec, MODEL)
    reference.load_state_dict(state)
    got, expected = loaded.managed.tables["user"], reference.managed.tables["user"]
    buffers = dict(got.named_buffers())
    assert buffers.keys() == dict(expected.named_buffers()).keys()
    for name, value in expected.named_buffers():
        assert not buffers[name].is_meta and torch.equal(buffers[name], value), name
    assert torch.equal(got._init_output_segments_tensor, expected._init_output_segments_tensor)
    assert all(got._mch_metadata[k] is getattr(got, f"_mch_{k}") for k in got._mch_metadata)


def test_rows_handed_to_other_ids_are_reported_once_and_reset_afresh():
    from pipeline.train.reassigned_rows import reset_generator, reset_rows

    spec = managed_spec(policy="lru")
    model = rec_model(spec, MODEL).train()
    _rows(model, _day(range(1000, 1010), seed=1), spec)
    filled = model.managed.take_reassigned_rows()["user"]
    assert sorted(filled.tolist()) == sorted(_rows(model.eval(), _day(range(1000, 1010), seed=1), spec).tolist())
    assert model.managed.take_reassigned_rows() == {}  # read once
    day2 = _day(range(5000, 5010), seed=2)
    _rows(model.train(), day2, spec)  # 5 free rows filled, 5 old ids' rows handed over
    handed = model.managed.take_reassigned_rows()["user"]
    assert sorted(handed.tolist()) == sorted(_rows(model.eval(), day2, spec).tolist())
    assert len(set(handed.tolist()) & set(filled.tolist())) == 5

    config = next(c for c in spec.embedding_bag_configs() if c.name == "user")
    weight = torch.full((ROWS, config.embedding_dim), 7.0)
    state = {"momentum1": torch.ones(2 * ROWS), "step": torch.tensor(3.0)}  # 2 column blocks of rows
    reset_rows(weight, state, handed, config, reset_generator(0, 2, "user"))
    kept = torch.ones(ROWS, dtype=torch.bool)
    kept[handed] = False
    bound = config.get_weight_init_max()
    assert bool((weight[handed].abs() <= bound).all()) and bool((weight[kept] == 7.0).all())
    assert len(set(weight[handed, 0].tolist())) == len(handed)  # drawn, not one value
    blocks = state["momentum1"].view(2, ROWS)
    assert bool((blocks[:, handed] == 0).all()) and bool((blocks[:, kept] == 1).all())
    assert float(state["step"]) == 3.0
    again = torch.full_like(weight, 7.0)
    reset_rows(again, {}, handed, config, reset_generator(0, 2, "user"))
    assert torch.equal(again, weight)  # the same draw for the same seed, step and table
    with pytest.raises(ValueError, match=r"optimizer state 'momentum1' of table 'user' has shape \(17,\)"):
        reset_rows(weight, {"momentum1": torch.ones(ROWS + 1)}, handed, config, reset_generator(0, 2, "user"))


def test_one_process_training_resets_the_rows_it_hands_over_in_its_optimizer_too():
    from pipeline.train.reassigned_rows import reset_reassigned_rows, unsharded_tables

    spec = managed_spec(policy="lru")
    model = rec_model(spec, MODEL).train()
    optimizer = torch.optim.Adagrad(model.ebc.parameters(), lr=0.1)  # as the in-memory run's tables
    weight = model.ebc.embedding_bags["user"].weight
    configs = spec.embedding_bag_configs()
    for step, users in enumerate((range(1000, 1010), range(5000, 5010)), start=1):
        batch = collate(_day(users, seed=step), spec)
        model(batch.sparse_features, batch.dense_features).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        before_weight, before_sum = weight.detach().clone(), optimizer.state[weight]["sum"].clone()
        rows = reset_reassigned_rows(model.managed, configs, 0, step, unsharded_tables(model, optimizer))["user"]
        kept = torch.ones(ROWS, dtype=torch.bool)
        kept[rows] = False
        assert len(rows) == 10  # day 1: 10 free rows filled; day 2: 5 free, 5 old ids' rows
        assert bool((before_sum[rows] != 0).all())  # each trained on this step
        assert bool((optimizer.state[weight]["sum"][rows] == 0).all())
        assert torch.equal(optimizer.state[weight]["sum"][kept], before_sum[kept])
        assert not torch.equal(weight[rows], before_weight[rows]) and torch.equal(weight[kept], before_weight[kept])
    assert model.managed.take_reassigned_rows() == {}
