"""Multi-task losses: binary cross-entropy per task, each restricted to its sample space, the
ESMM form of the (ctr, cvr) pair, and uncertainty weighting of the tasks' losses."""

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


def uncertainty_weighted(per_task: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """Kendall, Gal and Cipolla (CVPR 2018), their classification form: sum over tasks of
    exp(-s) * L + s / 2 with s = log sigma^2 learned per task. At its optimum exp(-s) = 1 / (2 L):
    the noisier task (the higher loss) gets the smaller weight. The s are dense parameters, so
    data-parallel training averages their gradients and every worker holds the same weights."""
    return (torch.exp(-log_vars) * per_task + 0.5 * log_vars).sum()
