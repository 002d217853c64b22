"""pipeline/train/binned_auc.py: the histogram AUC equals torchmetrics' binned AUROC, sums across
workers' states, and is nan without both labels."""

import math

import pytest
import torch
from torchmetrics.classification import BinaryAUROC

from pipeline.train.binned_auc import BinnedAUROC


def _scores(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, generator=g) < 0.3).long()
    preds = torch.sigmoid(torch.randn(n, generator=g) + target)  # informative, AUC well above 0.5
    # Edge scores and ties: exactly 0 and 1, values on the bins' edges, repeats.
    preds[:6] = torch.tensor([0.0, 1.0, 1.0, 0.5, 1 / 999, 1 - 1 / 999])
    preds[6:40] = 0.25
    return preds, target


@pytest.mark.parametrize("thresholds", [3, 10, 1000])
def test_equals_torchmetrics_binned_auroc_in_several_updates(thresholds):
    ours, theirs = BinnedAUROC(thresholds), BinaryAUROC(thresholds=thresholds)
    for seed in range(3):
        preds, target = _scores(5000, seed)
        ours.update(preds, target)
        theirs.update(preds, target)
    expected = theirs.compute().item()
    assert 0.55 < expected < 0.95  # informative scores, not a constant
    assert ours.compute().item() == pytest.approx(expected, abs=1e-6)


def test_close_to_the_exact_auc_and_reset_empties_it():
    preds, target = _scores(20000, 7)
    metric = BinnedAUROC(1000)
    metric.update(preds, target)
    exact = BinaryAUROC(thresholds=None)(preds, target).item()
    assert metric.compute().item() == pytest.approx(exact, abs=1e-3)
    metric.reset()
    assert int(metric.positives.sum()) == int(metric.negatives.sum()) == 0


def test_states_of_two_shards_sum_to_the_whole():
    preds, target = _scores(8000, 3)
    whole, first, second = BinnedAUROC(), BinnedAUROC(), BinnedAUROC()
    whole.update(preds, target)
    first.update(preds[:3000], target[:3000])
    second.update(preds[3000:], target[3000:])
    # What a distributed compute does with sum states: add the workers' histograms.
    first.positives += second.positives
    first.negatives += second.negatives
    assert first.compute().item() == whole.compute().item()


def test_one_label_only_is_nan():
    metric = BinnedAUROC()
    metric.update(torch.rand(100), torch.zeros(100, dtype=torch.long))
    assert math.isnan(metric.compute().item())
    with pytest.raises(ValueError, match="thresholds"):
        BinnedAUROC(1)
