"""The full recommender: a TorchRec EmbeddingBagCollection in front of the dense PLE.

Kept as two children (`ebc`, `dense`) so that training can shard `ebc` with
DistributedModelParallel while `dense` stays data-parallel, and scoring can load the same
state dict unsharded on one machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from ple_model.config import ModelConfig
from ple_model.managed_ids import ManagedIds, ManagedTable
from ple_model.ple import GateWeights, MultiTaskModel


def pooled_dim(tables: Sequence[EmbeddingBagConfig]) -> int:
    """Width of the concatenated pooled embedding: one vector per feature of each table."""
    return sum(t.embedding_dim * len(t.feature_names) for t in tables)


class RecModel(nn.Module):
    """(sparse KJT, dense [B, Dd]) -> logits [B, T]."""

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        num_dense: int,
        cfg: ModelConfig,
        device: torch.device | str | None = None,
        managed: Mapping[str, ManagedTable] | None = None,
        managed_device: torch.device | str | None = None,
    ) -> None:
        """managed: {table: ManagedTable} for the tables whose ids are managed (ple_model/managed_ids.py)
        rather than rows already; their mapping lives on `managed_device` (default `device`, but
        not the meta device, which would leave it without its initial values): "meta" only for a
        model whose whole state is then assigned (`assign_state`, as an export's is)."""
        super().__init__()
        # device="meta" lets DistributedModelParallel allocate each shard only where it lives.
        self.ebc = EmbeddingBagCollection(tables=list(tables), device=torch.device(device) if device else None)
        self.managed = (
            ManagedIds(tables, managed, managed_device or (device if str(device) != "meta" else None))
            if managed
            else None
        )
        self.num_dense = num_dense
        # The concatenation order of pooled features: tables in config order, their features
        # in order. A sharded EBC returns its keys grouped by sharding, so `.values()` would
        # scramble the dense input; features are therefore picked by key.
        self.feature_order = [f for t in tables for f in t.feature_names]
        self.dense = MultiTaskModel(cfg, pooled_dim(tables) + num_dense)

    def features(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        if self.managed is not None:
            sparse = self.managed(sparse)
        pooled = self.ebc(sparse).to_dict()
        parts = [pooled[name] for name in self.feature_order]
        if self.num_dense:
            parts.append(dense)
        return torch.cat(parts, dim=1)

    def forward(self, sparse: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(sparse, dense))

    def assign_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """`load_state_dict(state, assign=True)` (strict): the tensors become the model's own,
        so memory-mapped ones stay shared between processes; the managed tables' mapping is
        assigned as it is rather than re-sorted in place (ManagedIds.assign_state)."""
        children = dict(self.named_children())
        outside = sorted(k for k in state if k.split(".", 1)[0] not in children)
        if outside:
            raise KeyError(f"unexpected keys in the state dict: {outside[:3]}")
        for name, child in children.items():
            part = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            if isinstance(child, ManagedIds):
                child.assign_state(part)
            else:
                child.load_state_dict(part, assign=True)

    def forward_with_gates(
        self, sparse: KeyedJaggedTensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, list[GateWeights]]:
        return self.dense.forward_with_gates(self.features(sparse, dense))
