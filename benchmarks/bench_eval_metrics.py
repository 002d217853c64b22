"""The validation AUC's cost per batch: the histogram AUC the trainer uses against torchmetrics'
binned AUROC, side by side on the same batches.

    python benchmarks/bench_eval_metrics.py                  # 55 batches of 2,048 rows, 5 rounds

Both compute the AUC at 1,000 thresholds (the same number, tests/unit/test_binned_auc.py).
torchmetrics compares every score with every threshold; pipeline/train/binned_auc.py bins each
score once. Prints per round the seconds each takes to update on all the batches (what one
worker's evaluation of the comparison's validation day costs per task), and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torchmetrics.classification import BinaryAUROC

from pipeline.train.binned_auc import BinnedAUROC


def seconds_to_update(metric, batches) -> float:
    began = time.perf_counter()
    for preds, target in batches:
        metric.update(preds, target)
    metric.compute()
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=55)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.batches):
        target = (torch.rand(args.batch_size, generator=g) < 0.2).long()
        batches.append((torch.sigmoid(torch.randn(args.batch_size, generator=g) + target), target))
    seconds_to_update(BinaryAUROC(thresholds=1000), batches[:2])  # warm-up
    ratios = []
    for r in range(args.rounds):
        theirs = seconds_to_update(BinaryAUROC(thresholds=1000), batches)
        ours = seconds_to_update(BinnedAUROC(1000), batches)
        ratios.append(theirs / ours)
        print(f"round {r}: torchmetrics {theirs:.3f} s, histogram {ours:.4f} s, {ratios[-1]:.0f}x faster")
    print(
        f"{args.batches} batches of {args.batch_size:,} rows: histogram AUC {statistics.median(ratios):.0f}x faster "
        f"than torchmetrics' binned AUROC (median; rounds {min(ratios):.0f}x-{max(ratios):.0f}x)"
    )


if __name__ == "__main__":
    main()
