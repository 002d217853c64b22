"""GroupAUROC on 2 gloo ranks, the rows of every group split across both, == one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers.dist_utils import run_on_ranks
from pipeline.train.gauc import GroupAUROC

WORLD = 2


def rows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ties in predictions and groups without positives; row i belongs to group i % 150."""
    gen = torch.Generator().manual_seed(0)
    n = 2000
    key = torch.arange(n) % 150
    preds = torch.randint(0, 10, (n,), generator=gen).float() / 10
    target = (torch.rand(n, generator=gen) < (key % 7).float() / 10).long()  # key % 7 == 0: no positives
    return preds, target, key * 1_000_003


def reference_gauc(preds, target, groups) -> tuple[float, int]:
    """Brute force: sklearn's AUC one group at a time, weighted by the group's rows."""
    preds, target, groups = (np.asarray(a) for a in (preds, target, groups))
    num, den, counted = 0.0, 0, 0
    for g in np.unique(groups):
        rows = groups == g
        if len(np.unique(target[rows])) == 2:
            num += rows.sum() * roc_auc_score(target[rows], preds[rows])
            den += rows.sum()
            counted += 1
    return num / den, counted


def gauc_on_rank(rank: int, world_size: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(synced compute, this rank's rows only)."""
    preds, target, groups = rows()
    mine = torch.nonzero(torch.arange(len(preds)) % world_size == rank).squeeze(1)  # every group on both ranks
    m, local = GroupAUROC(), GroupAUROC(sync_on_compute=False)
    for b in mine.split(100 + 50 * rank):  # different batch counts per rank
        m.update(preds[b], target[b], groups[b])
        local.update(preds[b], target[b], groups[b])
    return m.compute(), local.compute()


def test_two_ranks_equal_one_process():
    preds, target, groups = rows()
    single = GroupAUROC()
    single.update(preds, target, groups)
    expected = single.compute()
    ref_gauc, ref_counted = reference_gauc(preds, target, groups)
    assert 0 < ref_counted <= 150 - len(range(0, 150, 7))  # key % 7 == 0 and a few others left out
    assert expected["gauc"].item() == pytest.approx(ref_gauc, abs=1e-12)
    assert expected["groups"].item() == ref_counted

    for out, local in run_on_ranks(gauc_on_rank, WORLD):
        assert abs(local["gauc"].item() - expected["gauc"].item()) > 1e-3  # one half alone differs
        assert out["gauc"].item() == pytest.approx(expected["gauc"].item(), abs=1e-12)
        assert out["groups"].item() == expected["groups"].item()
