"""Multi-task loss: binary cross-entropy per task, each restricted to its sample space."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce_per_task(logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean BCE of each task over the rows in its sample space, shape [T].

    A task with no row in its sample space in this batch (e.g. no click, so no CVR label)
    contributes 0 rather than NaN.
    """
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    weights = masks.to(per_row.dtype)
    return (per_row * weights).sum(0) / weights.sum(0).clamp_min(1.0)


def weighted_total(per_task: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_task * weights).sum()
