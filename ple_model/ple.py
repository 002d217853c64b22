"""Progressive Layered Extraction (Tang et al., RecSys 2020) with batched experts.

Per level: each task has its own experts, all tasks share some experts; a softmax gate per
task mixes (its experts + shared experts) into that task's next input, and a shared gate
mixes (all experts) into the next shared input. The last level needs no shared gate.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn

from ple_model.config import ModelConfig
from ple_model.stacked_mlp import StackedMLP, shared_input_forward


class GateWeights(NamedTuple):
    """Softmax weights of one level. `task`: [B, T, task_experts + shared_experts], each
    task's own experts first, then the shared ones. `shared`: [B, T*task_experts +
    shared_experts] or None on the last level."""

    task: torch.Tensor
    shared: torch.Tensor | None


def _gates(groups: int, members: int, in_dim: int, n_out: int, cfg: ModelConfig) -> StackedMLP:
    # A gate is `softmax(Linear(x))`, or `softmax(Linear(DNN(x)))` when gate_hidden is set;
    # the gates of a level are stacked like experts so they cost one bmm per layer.
    return StackedMLP(
        groups,
        members,
        in_dim,
        [*cfg.gate_hidden, n_out],
        cfg.activation,
        cfg.dropout,
        cfg.batch_norm,
        activate_last=False,
    )


class PLELayer(nn.Module):
    """One extraction level. `first`: every expert and gate sees the same input, so all
    experts of the level are one wide GEMM."""

    gate_columns: torch.Tensor  # a buffer (register_buffer), typed here for the type checker

    def __init__(self, cfg: ModelConfig, in_dim: int, first: bool, last: bool) -> None:
        super().__init__()
        self.num_tasks, self.k, self.s = cfg.num_tasks, cfg.task_experts, cfg.shared_experts
        self.first, self.last = first, last
        experts = functools.partial(
            StackedMLP,
            hidden=cfg.expert_hidden,
            activation=cfg.activation,
            dropout=cfg.dropout,
            batch_norm=cfg.batch_norm,
        )
        n_all = self.num_tasks * self.k + self.s
        if first:
            self.experts = experts(1, n_all, in_dim)
        else:
            self.task_experts = experts(self.num_tasks, self.k, in_dim) if self.k else None
            self.shared_experts = experts(1, self.s, in_dim) if self.s else None
        # First level: every task gate sees x (one group of T gates); later: one group per task.
        groups, members = (1, self.num_tasks) if first else (self.num_tasks, 1)
        self.task_gates = _gates(groups, members, in_dim, self.k + self.s, cfg)
        self.shared_gate = None if last else _gates(1, 1, in_dim, n_all, cfg)
        # Which of the level's experts each task gate mixes: its own k, then the S shared.
        own = torch.arange(self.num_tasks * self.k).view(self.num_tasks, self.k)
        shared = torch.arange(self.num_tasks * self.k, n_all).expand(self.num_tasks, self.s)
        self.register_buffer("gate_columns", torch.cat([own, shared], dim=1), persistent=False)

    def forward(
        self, task_inputs: torch.Tensor, shared_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, GateWeights]:
        """task_inputs: [B, T, D] (ignored on the first level, where shared_input is x);
        shared_input: [B, D]. Returns next task inputs [B, T, d], next shared input [B, d]
        (None on the last level) and the gate weights."""
        t, k = self.num_tasks, self.k
        if self.first:
            mlps = [self.experts, self.task_gates] + ([self.shared_gate] if self.shared_gate else [])
            outs = shared_input_forward(mlps, shared_input)
            experts, task_logits = outs[0], outs[1]  # [B, T*k + S, d], [B, T, k + S]
            shared_logits = outs[2].squeeze(1) if self.shared_gate else None
        else:
            parts = []
            if self.task_experts is not None:
                parts.append(self.task_experts(task_inputs))
            if self.shared_experts is not None:
                parts.append(self.shared_experts(shared_input))
            experts = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            task_logits = self.task_gates(task_inputs)
            shared_logits = self.shared_gate(shared_input).squeeze(1) if self.shared_gate else None
        batch, n_all, _ = experts.shape
        task_w = torch.softmax(task_logits, dim=-1)  # [B, T, k + S]
        # Every gate as a row of weights over all the level's experts (zero for the experts a
        # task gate does not see), so that all the mixing is ONE batched matmul
        # [B, gates, E] @ [B, E, d], forward and backward: half the time of broadcast
        # multiply-and-sum per gate on CPU (measured at B=4096), which also built [B, T, k, d]
        # temporaries.
        columns = self.gate_columns.expand(batch, t, k + self.s)
        weights = task_w.new_zeros(batch, t, n_all).scatter(2, columns, task_w)
        shared_w = shared = None
        if self.shared_gate is not None:
            assert shared_logits is not None  # computed above whenever the level has a shared gate
            shared_w = torch.softmax(shared_logits, dim=-1)  # [B, E]
            weights = torch.cat([weights, shared_w.unsqueeze(1)], dim=1)
        mixed = torch.bmm(weights, experts)  # [B, T (+1), d]
        if shared_w is not None:
            mixed, shared = mixed[:, :t], mixed[:, t]
        return mixed, shared, GateWeights(task_w, shared_w)


class PLE(nn.Module):
    """Stacked extraction levels: [B, in_dim] -> per-task representations [B, T, d]."""

    def __init__(self, cfg: ModelConfig, in_dim: int) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        d = cfg.expert_hidden[-1]
        n = cfg.num_levels
        self.levels = nn.ModuleList(
            PLELayer(cfg, in_dim if i == 0 else d, first=i == 0, last=i == n - 1) for i in range(n)
        )
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[GateWeights]]:
        task_inputs, shared, gates = x, x, []
        for level in self.levels:
            task_inputs, shared, weights = level(task_inputs, shared)
            gates.append(weights)
        return task_inputs, gates


class MultiTaskModel(nn.Module):
    """PLE (or a variant) plus one tower per task: features [B, in_dim] -> logits [B, T].

    The input is the concatenated pooled embedding, optionally with dense features
    appended; the sparse front (EmbeddingBagCollection) lives outside so the same dense
    model runs sharded in training and unsharded in scoring.
    """

    def __init__(self, cfg: ModelConfig, in_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.ple = PLE(cfg, in_dim)
        self.towers = StackedMLP(
            cfg.num_tasks,
            1,
            self.ple.out_dim,
            [*cfg.tower_hidden, 1],
            cfg.activation,
            cfg.dropout,
            cfg.batch_norm,
            activate_last=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gates(x)[0]

    def forward_with_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[GateWeights]]:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input [B, {self.in_dim}], got {list(x.shape)}")
        reps, gates = self.ple(x)
        return self.towers(reps).squeeze(-1), gates

    @torch.no_grad()
    def expert_utilisation(self, x: torch.Tensor) -> list[GateWeights]:
        """Mean gate weight per task per expert, per level (batch-averaged): the numbers to
        look at when diagnosing expert collapse. `task`: [T, k+S]; `shared`: [E] or None."""
        _, gates = self.forward_with_gates(x)
        return [GateWeights(g.task.mean(0), None if g.shared is None else g.shared.mean(0)) for g in gates]
