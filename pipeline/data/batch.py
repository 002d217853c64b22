"""The training batch: what the collate produces and TrainPipelineSparseDist moves to the device."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class Batch(Pipelineable):
    """One batch of B impressions.

    sparse_features: KJT keyed by the spec's sparse feature names, ids already mapped to rows.
    dense_features:  float32 [B, num_dense], normalised as the spec says.
    labels:          float32 [B, num_tasks], 0/1, in the spec's task order.
    label_masks:     bool [B, num_tasks]; False where a row is outside a task's sample space
                     (e.g. CVR on a non-clicked impression), so the loss must ignore it.
    groups:          int64 [B], the spec's `group_by` column (GAUC's groups), or None.
    missing:         feature name -> rows of this batch its missing-value policy filled.
    """

    sparse_features: KeyedJaggedTensor
    dense_features: torch.Tensor
    labels: torch.Tensor
    label_masks: torch.Tensor
    groups: torch.Tensor | None = None
    missing: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            label_masks=self.label_masks.to(device=device, non_blocking=non_blocking),
            groups=None if self.groups is None else self.groups.to(device=device, non_blocking=non_blocking),
            missing=self.missing,
        )

    def record_stream(self, stream: torch.Stream) -> None:
        # Tell the caching allocator these tensors are in use on `stream` (H2D copy stream).
        self.sparse_features.record_stream(stream)
        self.dense_features.record_stream(stream)
        self.labels.record_stream(stream)
        self.label_masks.record_stream(stream)
        if self.groups is not None:
            self.groups.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            sparse_features=self.sparse_features.pin_memory(),
            dense_features=self.dense_features.pin_memory(),
            labels=self.labels.pin_memory(),
            label_masks=self.label_masks.pin_memory(),
            groups=None if self.groups is None else self.groups.pin_memory(),
            missing=self.missing,
        )
