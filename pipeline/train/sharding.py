"""Sharding plans for the model's EmbeddingBagCollection, constrained by what the backend can run.

gloo (CPU) has no reduce-scatter, which row-wise sharding needs for its output distribution,
so on CPU only the sharding types whose collectives are all-to-all / all-reduce are allowed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.types import KernelConfig, PlannerError, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ModuleSharder, ShardingPlan
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from pipeline.common.config import ConfigError

CPU_SHARDING_TYPES = ["data_parallel", "table_wise", "column_wise", "table_column_wise"]
GPU_SHARDING_TYPES = CPU_SHARDING_TYPES + ["row_wise", "table_row_wise"]


class PlanningError(ConfigError):
    """The tables cannot be placed within the workers' memory budget: a config to change, not a
    fault to retry (it fails the run at once, before the tables are allocated)."""


# Bytes of optimizer state per row of a table of width `dim` (fp32): what the planner must fit
# beside the weights.
OPTIMIZER_STATE_FLOATS = {"rowwise_adagrad": lambda dim: 1, "adam": lambda dim: 2 * dim, "sgd": lambda dim: 0}


def table_bytes(rows: int, dim: int, sparse_optimizer: str) -> int:
    """Weights plus optimizer state of one fp32 table."""
    return rows * (dim + OPTIMIZER_STATE_FLOATS[sparse_optimizer](dim)) * 4


def worker_memory_budget(worker_memory_gb: float | None, device: torch.device, local_world_size: int) -> int:
    """Bytes one training worker may hold: `worker_memory_gb` when set, else its device's memory
    (a GPU's), or on CPU this node's memory shared among the workers on it."""
    if worker_memory_gb is not None:
        return int(worker_memory_gb * 2**30)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import psutil

    return psutil.virtual_memory().total // max(local_world_size, 1)


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def _reserved_part(reserved: Mapping[str, int]) -> str:
    if not reserved:
        return ""
    held = ", ".join(f"{name} {_size(b)}" for name, b in sorted(reserved.items(), key=lambda kv: -kv[1]))
    total = _size(sum(reserved.values()))
    return f" after {total} that every worker holds in full (managed-collision mappings: {held})"


def _does_not_fit(
    error: PlannerError | None,
    configs: list[EmbeddingBagConfig],
    world_size: int,
    budget: int,
    sparse_optimizer: str,
    reserved: Mapping[str, int],
) -> PlanningError:
    sized = [(c, table_bytes(c.num_embeddings, c.embedding_dim, sparse_optimizer)) for c in configs]
    sized.sort(key=lambda cb: -cb[1])  # the largest first
    tables = ", ".join(f"{c.name} {c.num_embeddings:,} x {c.embedding_dim} = {_size(b)}" for c, b in sized[:3])
    last = str(error).strip().splitlines()[-1].strip() if error is not None else "not run"
    return PlanningError(
        f"the embedding tables do not fit the workers' memory: {tables} (weights + {sparse_optimizer} state; "
        f"{_size(sum(b for _, b in sized))} in all) against a budget of {_size(budget)} per worker x {world_size} "
        f"workers{_reserved_part(reserved)}, of which torchrec keeps 15% for dense weights and activations "
        f"(cluster.worker_memory_gb). Raise the budget, add workers, or shrink the tables "
        f"(vocab_size / hash_buckets / dim). Planner: {last}"
    )


def allowed_sharding_types(device_type: str) -> list[str]:
    """Sharding types that work with the backend of `device_type` ("cpu" -> gloo, "cuda" -> NCCL)."""
    if device_type == "cpu":
        return list(CPU_SHARDING_TYPES)
    if device_type == "cuda":
        return list(GPU_SHARDING_TYPES)
    raise ValueError(f"unsupported device type {device_type!r}: expected 'cpu' or 'cuda'")


def sharders() -> list[ModuleSharder[nn.Module]]:
    """The sharders the plan and DistributedModelParallel must share (one per shardable module type)."""
    return [EmbeddingBagCollectionSharder()]


def _table_configs(module: nn.Module) -> list[EmbeddingBagConfig]:
    """Every embedding table of the EmbeddingBagCollections inside `module`."""
    configs = [c for m in module.modules() if isinstance(m, EmbeddingBagCollection) for c in m.embedding_bag_configs()]
    if not configs:
        raise ValueError("the module has no EmbeddingBagCollection to shard")
    return configs


def embedding_tables(module: nn.Module) -> list[str]:
    """Names of every embedding table of the EmbeddingBagCollections inside `module`."""
    return [c.name for c in _table_configs(module)]


def make_plan(
    ebc_module: nn.Module,
    world_size: int,
    device: torch.device,
    sharding_type: str | dict[str, str] | None = None,
    batch_size: int = 512,
    pg: dist.ProcessGroup | None = None,
    min_column_shard_dim: int | None = None,
    memory_budget: int | None = None,
    sparse_optimizer: str = "rowwise_adagrad",
    reserved: Mapping[str, int] | None = None,
) -> ShardingPlan:
    """Plan the sharding of every embedding table in `ebc_module`.

    `ebc_module` is the module that will be given to DistributedModelParallel (the plan is keyed
    by module paths relative to it, e.g. "model.ebc"); it may be on the meta device.
    sharding_type: force this type for every table, or {table: type} for some tables (e.g. the
        types a checkpoint was saved with, so that a resume on another world size keeps them);
        None lets the planner pick among the types the device allows.
    pg: when given, rank 0 plans and broadcasts the plan, so all ranks agree even if the planner
        were not deterministic.
    min_column_shard_dim: smallest column shard for (table_)column_wise; the planner's default
        (128) leaves tables narrower than that in one piece.
    memory_budget: bytes each rank may hold (worker_memory_budget); None keeps torchrec's default
        (128 GB of DDR per CPU rank). Tables that cannot fit raise PlanningError naming them.
    sparse_optimizer: the tables' update rule, whose state the error message counts.
    reserved: {name: bytes} every rank holds outside the planned shards (the managed tables'
        replicated mappings, ManagedIds.mapping_bytes): taken off memory_budget before planning.
    """
    reserved = dict(reserved or {})
    allowed = allowed_sharding_types(device.type)
    tables = embedding_tables(ebc_module)
    per_table = sharding_type if isinstance(sharding_type, dict) else dict.fromkeys(tables, sharding_type)
    for kind in {k for k in per_table.values() if k is not None}:
        if kind not in allowed:
            why = " (row_wise needs reduce-scatter, which gloo lacks; use CUDA/NCCL)" if "row" in kind else ""
            raise ValueError(f"sharding type {kind!r} is not allowed on {device.type}{why}; allowed: {allowed}")
    constraints = {
        name: ParameterConstraints(
            sharding_types=[per_table[name]] if per_table.get(name) else list(allowed),
            min_partition=min_column_shard_dim,
        )
        for name in tables
    }
    tables_budget = None
    if memory_budget is not None:
        tables_budget = memory_budget - sum(reserved.values())
        if tables_budget <= 0:
            raise _does_not_fit(None, _table_configs(ebc_module), world_size, memory_budget, sparse_optimizer, reserved)
    planner = EmbeddingShardingPlanner(
        # The factory, not Topology(...): torchrec warns on every plan of a directly built one.
        topology=TopologyFactory.create_topology(
            TrainerConfig(world_size=world_size, **_capacity(device, tables_budget)),
            kernel_config=KernelConfig(compute_device=device.type),
        ),
        batch_size=batch_size,
        constraints=constraints,
        debug=False,
    )
    try:
        if pg is not None:
            return planner.collective_plan(ebc_module, sharders(), pg)
        return planner.plan(ebc_module, sharders())
    except PlannerError as e:
        if memory_budget is None:
            raise
        raise _does_not_fit(
            e, _table_configs(ebc_module), world_size, memory_budget, sparse_optimizer, reserved
        ) from None


def _capacity(device: torch.device, memory_budget: int | None) -> dict[str, int]:
    """The TrainerConfig key of a rank's memory: tables live in HBM on a GPU, in DDR on CPU."""
    if memory_budget is None:
        return {}
    return {"hbm_cap_bytes" if device.type == "cuda" else "ddr_cap_bytes": memory_budget}


def describe_plan(plan: ShardingPlan) -> dict[str, dict[str, dict]]:
    """JSON-serialisable summary {module: {table: {sharding_type, compute_kernel, ranks}}},
    stored with checkpoints so a resume can tell what the tables were sharded as."""
    out: dict[str, dict[str, dict]] = {}
    for module_path, module_plan in plan.plan.items():
        out[module_path] = {
            table: {
                "sharding_type": ps.sharding_type,
                "compute_kernel": ps.compute_kernel,
                "ranks": list(ps.ranks) if ps.ranks is not None else None,
            }
            for table, ps in module_plan.items()
        }
    return out
