"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019): each task's loss weight follows
how fast its loss falls. Over windows of `window` steps, r_t = mean loss of the last window /
mean loss of the one before, and w = T * softmax(r / temperature): a task whose loss stalls
gets more weight. Chosen over GradNorm because it needs only the per-task losses every step
already computes; GradNorm needs each task's gradient norm at the shared layers, an extra
backward per task that the single-backward train pipeline has no room for.

Under data parallelism each worker sees other rows and so other losses: the window means are
summed over the workers (one all_reduce per window, at the same step everywhere), so every
worker computes the same weights."""

from __future__ import annotations

import torch


class DynamicWeightAverage:
    def __init__(self, num_tasks: int, window: int, temperature: float) -> None:
        self.num_tasks, self.window, self.temperature = num_tasks, window, temperature
        self.sums = torch.zeros(num_tasks, dtype=torch.float64)
        self.count = 0
        self.means: list[list[float]] = []  # the last two windows' mean losses (all workers)

    def observe(self, per_task: torch.Tensor) -> None:
        """One step's per-task losses on this worker."""
        self.sums += per_task.detach().to("cpu", torch.float64)
        self.count += 1

    def close_window(self) -> None:
        """End a window: gather the workers' sums (a collective: call it at the same step on all)."""
        totals = torch.cat([self.sums, torch.tensor([float(self.count)], dtype=torch.float64)])
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        mean = (totals[:-1] / totals[-1].clamp_min(1.0)).tolist()
        self.means = [*self.means, mean][-2:]
        self.sums.zero_()
        self.count = 0

    def weights(self) -> torch.Tensor:
        """w = T * softmax(r / temperature); 1 for every task until two windows have closed."""
        if len(self.means) < 2:
            return torch.ones(self.num_tasks)
        before, last = (torch.tensor(m, dtype=torch.float64) for m in self.means)
        ratio = last / before.clamp_min(1e-12)
        return (self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)).float()

    def state(self) -> dict:
        """For the checkpoint: a resumed run continues with the same windows."""
        return {"means": self.means, "sums": self.sums.tolist(), "count": self.count}

    def load(self, state: dict) -> None:
        self.means = [list(m) for m in state["means"]]
        self.sums = torch.tensor(state["sums"], dtype=torch.float64)
        self.count = int(state["count"])
