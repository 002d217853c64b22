"""GroupAUROC against a brute-force reference: a Python loop over groups with sklearn's AUC."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipeline.train.gauc import GroupAUROC


def reference_gauc(preds, target, groups) -> tuple[float, int]:
    """sum_g n_g * AUC_g / sum_g n_g over groups with both labels, one group at a time."""
    preds, target, groups = (np.asarray(a) for a in (preds, target, groups))
    num, den, counted = 0.0, 0, 0
    for g in np.unique(groups):
        rows = groups == g
        if len(np.unique(target[rows])) < 2:
            continue
        num += rows.sum() * roc_auc_score(target[rows], preds[rows])
        den += rows.sum()
        counted += 1
    return (num / den if den else float("nan")), counted


def random_rows(seed: int, n: int = 3000, n_groups: int = 200):
    """Rows with many tied predictions (a few distinct values) and some one-label groups."""
    gen = torch.Generator().manual_seed(seed)
    key = torch.randint(0, n_groups, (n,), generator=gen)
    groups = torch.randint(-(2**62), 2**62, (n_groups,), generator=gen)[key]  # hashed-looking int64 ids
    preds = torch.randint(0, 8, (n,), generator=gen).float() / 8
    rate = torch.rand(n_groups, generator=gen)[key] * 0.5  # low-rate groups often have no positive
    target = (torch.rand(n, generator=gen) < rate).long()
    return preds, target, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_with_ties_and_one_label_groups(seed):
    preds, target, groups = random_rows(seed)
    expected, counted = reference_gauc(preds, target, groups)
    assert 0 < counted < groups.unique().numel()  # some groups have one label only

    m = GroupAUROC()
    m.update(preds, target, groups)
    out = m.compute()
    assert out["gauc"].item() == pytest.approx(expected, abs=1e-12)
    assert out["groups"].item() == counted


def test_continuous_predictions():
    gen = torch.Generator().manual_seed(3)
    preds, groups = torch.rand(500, generator=gen), torch.randint(0, 20, (500,), generator=gen)
    target = (torch.rand(500, generator=gen) < preds).long()
    m = GroupAUROC()
    m.update(preds, target, groups)
    expected, counted = reference_gauc(preds, target, groups)
    assert m.compute()["gauc"].item() == pytest.approx(expected, abs=1e-12)
    assert m.compute()["groups"].item() == counted == 20


def test_batches_equal_one_update():
    preds, target, groups = random_rows(4)
    whole = GroupAUROC()
    whole.update(preds, target, groups)
    batched = GroupAUROC()
    for idx in torch.randperm(len(preds), generator=torch.Generator().manual_seed(0)).split(317):
        batched.update(preds[idx], target[idx], groups[idx])
    a, b = whole.compute(), batched.compute()
    assert a["gauc"].item() == pytest.approx(b["gauc"].item(), abs=1e-12)
    assert a["groups"].item() == b["groups"].item()


def test_hand_computed():
    # group 7: preds .1 .4 .4 .8, labels 0 1 0 1 -> pairs (pos, neg): (.4,.1)=1 (.4,.4)=1/2
    #   (.8,.1)=1 (.8,.4)=1 -> AUC 3.5/4, 4 rows.
    # group 3: preds .9 .2 labels 0 1 -> AUC 0, 2 rows.  group 5: one label only, left out.
    preds = torch.tensor([0.1, 0.9, 0.4, 0.4, 0.5, 0.8, 0.2, 0.6])
    target = torch.tensor([0, 0, 1, 0, 1, 1, 1, 1])
    groups = torch.tensor([7, 3, 7, 7, 5, 7, 3, 5])
    m = GroupAUROC()
    m.update(preds, target, groups)
    out = m.compute()
    assert out["gauc"].item() == pytest.approx((4 * 3.5 / 4 + 2 * 0.0) / 6)
    assert out["groups"].item() == 2


def test_one_label_only_is_nan():
    m = GroupAUROC()
    m.update(torch.rand(10), torch.ones(10, dtype=torch.long), torch.arange(10) % 3)
    out = m.compute()
    assert math.isnan(out["gauc"].item()) and out["groups"].item() == 0


def test_no_rows_is_nan_and_reset():
    m = GroupAUROC()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute before update
        out = m.compute()
    assert math.isnan(out["gauc"].item()) and out["groups"].item() == 0
    m.update(torch.tensor([0.2, 0.7]), torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert m.compute()["gauc"].item() == 1.0
    m.reset()
    m.update(torch.tensor([0.2, 0.7]), torch.tensor([1, 0]), torch.tensor([1, 1]))
    assert m.compute()["gauc"].item() == 0.0


def test_rejects_bad_inputs():
    m = GroupAUROC()
    with pytest.raises(ValueError, match="1-D"):
        m.update(torch.rand(3), torch.ones(3), torch.arange(4))
    with pytest.raises(ValueError, match="integer"):
        m.update(torch.rand(3), torch.ones(3), torch.rand(3))
    with pytest.raises(ValueError, match="0/1"):
        m.update(torch.rand(3), torch.tensor([0, 2, 1]), torch.arange(3))
