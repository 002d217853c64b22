"""The sharding planner is given the workers' memory budget: tables that cannot fit fail at
planning, with a message naming them, their bytes and the budget, before any table is allocated."""

from __future__ import annotations

import pytest
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from pipeline.common.errors import EXIT_BAD_CONFIG
from pipeline.train.sharding import PlanningError, make_plan, table_bytes, worker_memory_budget

CPU = torch.device("cpu")


def _ebc(user_rows: int) -> EmbeddingBagCollection:
    tables = [
        EmbeddingBagConfig(name="user", embedding_dim=32, num_embeddings=user_rows, feature_names=["user_id"]),
        EmbeddingBagConfig(name="item", embedding_dim=16, num_embeddings=1000, feature_names=["item_id"]),
    ]
    return EmbeddingBagCollection(tables=tables, device=torch.device("meta"))  # planning allocates nothing


def test_tables_beyond_the_budget_fail_at_planning_naming_them():
    user = table_bytes(30_000_000, 32, "rowwise_adagrad")
    assert user == 30_000_000 * 33 * 4  # 32 weights and one accumulator per row
    with pytest.raises(PlanningError) as err:
        make_plan(_ebc(30_000_000), 2, CPU, memory_budget=2 * 2**30)
    message = str(err.value)
    assert message.startswith(
        "the embedding tables do not fit the workers' memory: user 30,000,000 x 32 = 3.69 GB, item 1,000 x 16 = 0.1 MB"
    )
    assert "against a budget of 2.00 GB per worker x 2 workers" in message
    assert "cluster.worker_memory_gb" in message and "does not fit on any rank" in message
    assert err.value.exit_status == EXIT_BAD_CONFIG  # a config to change: no retry


def test_the_same_tables_plan_within_a_budget_they_fit():
    plan = make_plan(_ebc(30_000_000), 2, CPU, memory_budget=16 * 2**30)
    assert set(plan.plan[""]) == {"user", "item"}


def test_the_budget_is_the_config_or_the_nodes_memory_per_worker():
    import psutil

    assert worker_memory_budget(1.5, CPU, 2) == int(1.5 * 2**30)
    assert worker_memory_budget(None, CPU, 4) == psutil.virtual_memory().total // 4


def test_managed_mappings_are_taken_off_the_budget_before_planning():
    from ple_model.managed_ids import ManagedIds, ManagedTable

    rows = 1_000_000
    ebc = _ebc(rows)
    mapping = ManagedIds(ebc.embedding_bag_configs(), {"user": ManagedTable("lru")}).mapping_bytes()
    assert mapping["user"] >= 24 * rows  # raw ids, rows and last-access steps: 8 bytes each a row
    # The tables (126 MB with their optimizer state, 2**20-byte MB as the message counts) fit 130 MB; beside
    # the mapping they do not.
    budget = 130 * 2**20
    make_plan(ebc, 1, CPU, memory_budget=budget)
    with pytest.raises(PlanningError) as err:
        make_plan(ebc, 1, CPU, memory_budget=budget, reserved=mapping)
    assert "after 22.9 MB that every worker holds in full (managed-collision mappings: user 22.9 MB)" in str(err.value)
    # A mapping alone beyond the budget fails before the planner runs.
    with pytest.raises(PlanningError, match="Planner: not run"):
        make_plan(ebc, 1, CPU, memory_budget=20 * 2**20, reserved=mapping)
