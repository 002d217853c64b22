"""A fresh start for the rows a managed table hands to new ids (ple_model/managed_ids.py).

When TorchRec's MCH evicts an id, the id admitted in its place gets the row as it is: the evicted
id's embedding and optimizer state. With row-wise Adagrad that state is the old id's sum of
squared gradients, so the newcomer learns with the small step the old id had worked down to.
TorchRec's own sharded managed-collision EBC (CUDA only) re-initialises such rows and zeroes their
optimizer state; its unsharded MCH, the mapping in front of this project's sharded EBC, does not.
So the worker does it after every training step, for the rows MCH reports
(`ManagedIds.take_reassigned_rows`): weights drawn as TorchRec initialises a table (uniform within
the table config's bounds), optimizer state zero.

benchmarks/bench_collisions.py (10 % daily id drift, seeds 0-3, 2 CPU workers), managed minus
hashed AUC: cvr -0.0086 +- 0.0036 before, +0.0052 +- 0.0049 with it; ctr +0.0028 +- 0.0078 before,
+0.0091 +- 0.0046 with it (every seed above hashing on both tasks).

The draw holds the rows reset at one step (at most the distinct ids of one eviction interval),
not the table.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from ple_model.managed_ids import ManagedIds

if TYPE_CHECKING:  # the training job's; the in-memory run does without torchrec's distributed modules
    from pipeline.train.sharded_model import ShardedModel


def _local_pieces(tensor: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
    """(first row, first column, tensor) of each piece of `tensor` this process holds: the local
    shards of a ShardedTensor, or the whole tensor."""
    if isinstance(tensor, ShardedTensor):
        pieces = []
        for shard in tensor.local_shards():
            offsets = shard.metadata.shard_offsets
            pieces.append((offsets[0], offsets[1] if len(offsets) > 1 else 0, shard.tensor))
        return pieces
    return [(0, 0, tensor)]


def reset_generator(seed: int, step: int, table: str) -> torch.Generator:
    """The draw of `table`'s rows reset after `step`: the same in every process (str hashes are not)."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{step}/{table}".encode()))


@torch.no_grad()
def reset_rows(
    weight: torch.Tensor,
    optimizer_state: Mapping[str, Any],
    rows: torch.Tensor,
    config: EmbeddingBagConfig,
    generator: torch.Generator,
) -> None:
    """Draw `rows` of one table's `weight` afresh (uniform within `config`'s initialisation
    bounds) and zero them in each of its optimizer state tensors: scalars, such as Adam's step,
    stay; a state of k entries per row (one block of rows per column shard) is zeroed in every
    block. The tensors are this process's own, written in place: whole tensors, or ShardedTensors
    of which the local shards are. Whole rows are drawn, so every rank and every sharding of the
    table writes the same values for the same `generator` state."""
    fresh = torch.empty(rows.numel(), config.embedding_dim).uniform_(
        config.get_weight_init_min(), config.get_weight_init_max(), generator=generator
    )
    for row0, col0, local in _local_pieces(weight):
        mine = (rows >= row0) & (rows < row0 + local.shape[0])
        local[rows[mine] - row0] = fresh[mine, col0 : col0 + local.shape[1]].to(local.dtype)
    num_rows = config.num_embeddings
    for key, value in optimizer_state.items():
        if not isinstance(value, torch.Tensor) or len(value.size()) == 0:
            continue
        if value.size(0) % num_rows:
            raise ValueError(
                f"optimizer state {key!r} of table {config.name!r} has shape {tuple(value.size())}, "
                f"not a whole number of entries per row of its {num_rows}: cannot reset rows in it"
            )
        # Row-wise state of a column-sharded table holds one block of rows per column shard, one
        # after the other (fbgemm keeps an accumulator per row in each shard).
        blocks = rows + num_rows * torch.arange(value.size(0) // num_rows).unsqueeze(1)
        entries = blocks.flatten()
        for row0, _, local in _local_pieces(value):
            mine = (entries >= row0) & (entries < row0 + local.shape[0])
            local[entries[mine] - row0] = 0


Tables = Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Mapping[str, Any]]]]


def reset_reassigned_rows(
    managed: ManagedIds, configs: list[EmbeddingBagConfig], seed: int, step: int, tables: Tables
) -> dict[str, torch.Tensor]:
    """After a training step: reset the rows MCH has given to other ids since the last call;
    {table: the rows reset}. `tables()` gives ({parameter name: weight}, {parameter name: its
    optimizer state}) in place, called only when there are rows to reset (`sharded_tables`,
    `unsharded_tables`). Every rank must call it at the same steps (each writes its own shards;
    replicated tables get the same draw everywhere, seeded by seed, step and table)."""
    taken = managed.take_reassigned_rows()
    if not taken:
        return {}
    weights, states = tables()
    by_name = {c.name: c for c in configs}
    for table, rows in taken.items():
        key = next(k for k in weights if k.endswith(f"embedding_bags.{table}.weight"))
        reset_rows(weights[key], states.get(key, {}), rows, by_name[table], reset_generator(seed, step, table))
    return taken


def sharded_tables(sm: ShardedModel) -> Tables:
    """The training job's tables: both state dicts hold views, of the tables' shards and of the
    optimizer state beside them."""
    return lambda: (sm.model.state_dict(), sm.optimizer.state_dict()["state"])


def unsharded_tables(model: nn.Module, optimizer: torch.optim.Optimizer) -> Tables:
    """One process's tables (the in-memory smoke run): its parameters and `optimizer`'s state of each."""

    def tables() -> tuple[dict[str, torch.Tensor], dict[str, Mapping[str, Any]]]:
        named: dict[str, torch.Tensor] = dict(model.named_parameters())
        return named, {name: optimizer.state[p] for name, p in named.items() if p in optimizer.state}

    return tables
