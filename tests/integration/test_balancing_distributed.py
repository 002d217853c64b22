"""Dynamic Weight Average on 2 gloo ranks whose losses differ: both compute the same weights,
those of the pooled losses."""

from __future__ import annotations

import torch

from helpers.dist_utils import run_on_ranks
from pipeline.train.balancing import DynamicWeightAverage

# Per rank, per window: the per-task losses of each of the window's 2 steps.
LOSSES = {
    0: [[[1.0, 2.0], [1.2, 2.0]], [[0.4, 1.9], [0.6, 1.7]]],
    1: [[[0.8, 1.0], [1.0, 1.0]], [[0.5, 1.1], [0.5, 1.3]]],
}


def dwa_on_rank(rank: int, world_size: int) -> list[float]:
    dwa = DynamicWeightAverage(num_tasks=2, window=2, temperature=2.0)
    for window in LOSSES[rank]:
        for step in window:
            dwa.observe(torch.tensor(step))
        dwa.close_window()
    return dwa.weights().tolist()


def test_every_rank_uses_the_weights_of_the_pooled_losses():
    per_rank = run_on_ranks(dwa_on_rank, 2)
    assert per_rank[0] == per_rank[1]
    pooled = DynamicWeightAverage(num_tasks=2, window=4, temperature=2.0)  # one process, all rows
    for w in range(2):
        for rank in (0, 1):
            for step in LOSSES[rank][w]:
                pooled.observe(torch.tensor(step))
        pooled.close_window()
    torch.testing.assert_close(torch.tensor(per_rank[0]), pooled.weights())
    # Rank 0's losses alone give other weights: the test would see a worker that did not gather.
    assert dwa_on_rank(0, 1) != per_rank[0] != [1.0, 1.0]
