"""The training step's module: RecModel + multi-task loss, in the (loss, output) form that
torchrec's TrainPipelineSparseDist expects from `model(batch)`."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.batch import Batch
from pipeline.losses import masked_bce_per_task
from ple_model.rec_model import RecModel


def esmm_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ESMM (Ma et al., SIGIR 2018) on tasks [ctr, cvr]: [BCE(pCTR, click), BCE(pCTR*pCVR, click*conv)],
    both over all impressions, so the CVR tower is trained on the whole impression space
    without ever seeing a CVR label outside clicks.

    log pCTCVR and log(1 - pCTCVR) are computed from log-sigmoids, which stays finite where
    the product of the probabilities under/overflows.
    """
    click, conversion = labels[:, 0], labels[:, 0] * labels[:, 1]
    ctr_loss = F.binary_cross_entropy_with_logits(logits[:, 0], click)
    log_p = F.logsigmoid(logits[:, 0]) + F.logsigmoid(logits[:, 1])  # log pCTCVR <= 0
    log_not_p = torch.log((-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).tiny))
    ctcvr_loss = -(conversion * log_p + (1 - conversion) * log_not_p).mean()
    return torch.stack([ctr_loss, ctcvr_loss])


class TrainModule(nn.Module):
    """model(batch) -> (weighted total loss, (per-task loss, logits, labels, masks)), all detached
    except the loss.

    Per-task loss: BCE restricted to each task's sample space (label_masks), or the ESMM form.
    `loss_weights` is a non-persistent buffer: the training loop may overwrite it every step
    (e.g. a decay schedule) and checkpoints do not pin it.
    """

    def __init__(self, model: RecModel, loss_weights: Sequence[float], esmm: bool = False) -> None:
        super().__init__()
        self.model = model
        self.esmm = esmm
        self.register_buffer("loss_weights", torch.as_tensor(list(loss_weights), dtype=torch.float32),
                             persistent=False)
        if esmm and len(self.loss_weights) != 2:
            raise ValueError(f"esmm needs exactly two tasks [ctr, cvr], got {len(self.loss_weights)} loss weights")

    def set_loss_weights(self, weights: Sequence[float] | torch.Tensor) -> None:
        """In place, so the buffer stays on its device and any wrapper's reference stays valid."""
        new = torch.as_tensor(weights, dtype=self.loss_weights.dtype)
        if new.shape != self.loss_weights.shape:
            raise ValueError(f"expected {tuple(self.loss_weights.shape)} loss weights, got {tuple(new.shape)}")
        self.loss_weights.copy_(new)

    def features(self, batch: Batch) -> torch.Tensor:
        return self.model.features(batch.sparse_features, batch.dense_features)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        logits = self.model.dense(self.features(batch))
        if self.esmm:
            per_task = esmm_losses(logits, batch.labels)
        else:
            per_task = masked_bce_per_task(logits, batch.labels, batch.label_masks)
        total = (per_task * self.loss_weights.to(per_task.dtype)).sum()
        return total, (per_task.detach(), logits.detach(), batch.labels, batch.label_masks)
