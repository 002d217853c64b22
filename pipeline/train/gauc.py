"""GAUC (group AUC): the impression-weighted mean of per-user AUCs, which ranking teams report
next to the global AUC because it only compares items shown to the same user.

GAUC = sum_g n_g * AUC_g / sum_g n_g over the groups g that have both a positive and a negative
label, n_g being the group's number of rows; groups with one label only have no AUC and are left
out. AUC_g is the Mann-Whitney statistic, tied predictions counting 1/2.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


def group_auroc(preds: Tensor, target: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """(GAUC as a float64 scalar, nan when no group has both labels; number of groups counted).

    Vectorised: one stable sort by (group, pred), average ranks of tied (group, pred) runs, then
    per-group sums with bincount: AUC_g = (R_pos - P(P+1)/2) / (P * N), R_pos being the sum of the
    positives' ranks within the group, P and N its numbers of positives and negatives.
    """
    order = torch.argsort(preds, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]  # lexsort: by group, then pred
    g, p, y = groups[order], preds[order], target[order].double()

    _, group_idx, group_size = torch.unique_consecutive(g, return_inverse=True, return_counts=True)
    group_start = torch.cumsum(group_size, 0) - group_size

    # Runs of equal (group, pred); each row gets its run's average 1-based rank within its group.
    new_run = torch.ones_like(g, dtype=torch.bool)
    new_run[1:] = (g[1:] != g[:-1]) | (p[1:] != p[:-1])
    run_idx = torch.cumsum(new_run, 0) - 1
    run_start = torch.nonzero(new_run).squeeze(1)
    run_len = torch.bincount(run_idx)
    first_rank = run_start - group_start[group_idx[run_start]] + 1
    rank = (first_rank.double() + (run_len.double() - 1) / 2)[run_idx]

    n_groups = group_size.numel()
    pos = torch.bincount(group_idx, weights=y, minlength=n_groups)
    rank_pos = torch.bincount(group_idx, weights=y * rank, minlength=n_groups)
    size = group_size.double()
    neg = size - pos
    counted = (pos > 0) & (neg > 0)
    pos, neg, rank_pos, size = pos[counted], neg[counted], rank_pos[counted], size[counted]
    auc = (rank_pos - pos * (pos + 1) / 2) / (pos * neg)
    gauc = (size * auc).sum() / size.sum()  # 0 / 0 = nan when no group is counted
    return gauc, counted.sum()


class GroupAUROC(Metric):
    """GAUC over everything seen since the last reset, gathered from every worker.

    `update(preds, target, groups)`: float scores [N], 0/1 labels [N], int64 group ids [N] (the
    caller hashes user ids to int64). `compute()` returns `{"gauc": float64 scalar (nan when no
    group has both labels), "groups": int64 scalar, the number of groups counted}`.

    Exact, so it keeps every row (three numbers each) until reset: fine for a validation set, not
    for an unbounded stream. The states are lists with `dist_reduce_fx="cat"`, so under
    torch.distributed `compute()` gathers all workers' rows first: a user whose rows sit on
    several workers counts once, and the result equals one process on the same rows. (As with
    any torchmetrics list state, every worker must have updated at least once before a
    distributed compute.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    preds: list[Tensor]
    target: list[Tensor]
    groups: list[Tensor]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        if not (preds.ndim == 1 and preds.shape == target.shape == groups.shape):
            raise ValueError(
                f"preds, target and groups must be 1-D of one length, got {preds.shape}, {target.shape}, {groups.shape}"
            )
        if groups.is_floating_point():
            raise ValueError(f"groups must be integer ids, got {groups.dtype}")
        if not ((target == 0) | (target == 1)).all():
            raise ValueError("target must hold 0/1 labels")
        self.preds.append(preds.detach() if preds.is_floating_point() else preds.detach().float())
        self.target.append(target.detach().long())
        self.groups.append(groups.detach().long())

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.preds, list) and not self.preds:  # no rows at all
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
            return {"gauc": nan, "groups": torch.tensor(0, device=self.device)}
        gauc, counted = group_auroc(dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.groups))
        return {"gauc": gauc, "groups": counted}
