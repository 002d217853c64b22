"""The training step's module: RecModel + multi-task loss, in the (loss, output) form that
torchrec's TrainPipelineSparseDist expects from `model(batch)`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.data.batch import Batch
from pipeline.data.feature_spec import FeatureSpec
from pipeline.train.losses import esmm_losses, masked_bce_per_task, uncertainty_weighted
from ple_model.config import ModelConfig
from ple_model.managed_ids import ManagedTable
from ple_model.rec_model import RecModel


def rec_model(
    spec: FeatureSpec,
    cfg: ModelConfig,
    device: torch.device | str | None = None,
    managed_device: torch.device | str | None = None,
) -> RecModel:
    """The RecModel `spec` describes: its tables, its dense width, its managed tables' mapping
    (on `managed_device`, default `device`; see RecModel)."""
    managed = {
        t.name: ManagedTable(t.eviction_policy.policy, t.eviction_policy.interval_steps) for t in spec.managed_tables
    }
    return RecModel(
        spec.embedding_bag_configs(), spec.num_dense, cfg, device=device, managed=managed, managed_device=managed_device
    )


class TrainModule(nn.Module):
    """model(batch) -> (weighted total loss, (per-task loss, logits, labels, masks)), all detached
    except the loss.

    Per-task loss: BCE restricted to each task's sample space (label_masks), or the ESMM form.
    `loss_weights` is a non-persistent buffer: the training loop may overwrite it every step
    (e.g. a decay schedule) and checkpoints do not pin it.
    uncertainty: learn a log-variance per task (`log_vars`, checkpointed with the model) and
    weight the losses by it (pipeline/train/losses.py `uncertainty_weighted`), times loss_weights.
    """

    loss_weights: torch.Tensor  # a buffer (register_buffer), typed here for the type checker

    def __init__(
        self, model: RecModel, loss_weights: Sequence[float], esmm: bool = False, uncertainty: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.esmm = esmm
        self.log_vars = nn.Parameter(torch.zeros(len(loss_weights))) if uncertainty else None
        self.register_buffer("loss_weights", torch.as_tensor(list(loss_weights), dtype=torch.float32), persistent=False)
        if esmm and len(self.loss_weights) != 2:
            raise ValueError(f"esmm needs exactly two tasks [ctr, cvr], got {len(self.loss_weights)} loss weights")

    def set_loss_weights(self, weights: Sequence[float] | torch.Tensor) -> None:
        """In place, so the buffer stays on its device and any wrapper's reference stays valid."""
        new = torch.as_tensor(weights, dtype=self.loss_weights.dtype)
        if new.shape != self.loss_weights.shape:
            raise ValueError(f"expected {tuple(self.loss_weights.shape)} loss weights, got {tuple(new.shape)}")
        self.loss_weights.copy_(new)

    def task_weights(self) -> torch.Tensor:
        """The weight each task's loss gets now: loss_weights, times exp(-log_var) if learned."""
        w = self.loss_weights.detach().clone()
        return w if self.log_vars is None else w * torch.exp(-self.log_vars.detach().to(w.device))

    def features(self, batch: Batch) -> torch.Tensor:
        return self.model.features(batch.sparse_features, batch.dense_features)

    def forward(
        self, batch: Batch
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        logits = self.model.dense(self.features(batch))
        if self.esmm:
            per_task = esmm_losses(logits, batch.labels)
        else:
            per_task = masked_bce_per_task(logits, batch.labels, batch.label_masks)
        weighted = per_task * self.loss_weights.to(per_task.dtype)
        total = weighted.sum() if self.log_vars is None else uncertainty_weighted(weighted, self.log_vars)
        return total, (per_task.detach(), logits.detach(), batch.labels, batch.label_masks)
