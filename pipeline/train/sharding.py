"""Sharding plans for the model's EmbeddingBagCollection, constrained by what the backend can run.

gloo (CPU) has no reduce-scatter, which row-wise sharding needs for its output distribution,
so on CPU only the sharding types whose collectives are all-to-all / all-reduce are allowed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ModuleSharder, ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection

CPU_SHARDING_TYPES = ["data_parallel", "table_wise", "column_wise", "table_column_wise"]
GPU_SHARDING_TYPES = CPU_SHARDING_TYPES + ["row_wise", "table_row_wise"]


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


def embedding_tables(module: nn.Module) -> list[str]:
    """Names of every embedding table of the EmbeddingBagCollections inside `module`."""
    names: list[str] = []
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            names.extend(c.name for c in m.embedding_bag_configs())
    if not names:
        raise ValueError("the module has no EmbeddingBagCollection to shard")
    return names


def make_plan(
    ebc_module: nn.Module,
    world_size: int,
    device: torch.device,
    sharding_type: str | dict[str, str] | None = None,
    batch_size: int = 512,
    pg: dist.ProcessGroup | None = None,
    min_column_shard_dim: int | None = None,
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
    """
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
    planner = EmbeddingShardingPlanner(
        # The factory, not Topology(...): torchrec warns on every plan of a directly built one.
        topology=TopologyFactory.create_topology(
            TrainerConfig(world_size=world_size), kernel_config=KernelConfig(compute_device=device.type)
        ),
        batch_size=batch_size,
        constraints=constraints,
        debug=False,
    )
    if pg is not None:
        return planner.collective_plan(ebc_module, sharders(), pg)
    return planner.plan(ebc_module, sharders())


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
