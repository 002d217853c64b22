"""Plain loop-based PLE, written the way the paper's reference structure reads.

Used only to prove that the batched implementation in `ple_model` computes the same thing
(and as the baseline of benchmarks/bench_ple.py). One nn.Sequential per expert, per gate
and per tower; Python loops over tasks and experts.
"""

from __future__ import annotations

import torch
from torch import nn

from ple_model import ModelConfig, MultiTaskModel, StackedMLP
from ple_model.config import make_activation


def _mlp(in_dim: int, hidden: list[int], cfg: ModelConfig, activate_last: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, h in enumerate(hidden):
        layers.append(nn.Linear(in_dim, h))
        if i < len(hidden) - 1 or activate_last:
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(make_activation(cfg.activation))
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
        in_dim = h
    return nn.Sequential(*layers)


class RefLevel(nn.Module):
    def __init__(self, cfg: ModelConfig, in_dim: int, last: bool) -> None:
        super().__init__()
        t, k, s, h = cfg.num_tasks, cfg.task_experts, cfg.shared_experts, cfg.expert_hidden
        self.t, self.k, self.s = t, k, s
        self.task_experts = nn.ModuleList(nn.ModuleList(_mlp(in_dim, h, cfg) for _ in range(k)) for _ in range(t))
        self.shared_experts = nn.ModuleList(_mlp(in_dim, h, cfg) for _ in range(s))
        gate = lambda n: nn.Sequential(
            _mlp(in_dim, [*cfg.gate_hidden, n], cfg, activate_last=False), nn.Softmax(dim=-1)
        )
        self.task_gates = nn.ModuleList(gate(k + s) for _ in range(t))
        self.shared_gate = None if last else gate(t * k + s)

    def forward(self, task_inputs: list[torch.Tensor], shared_input: torch.Tensor):
        task_outs = [[e(task_inputs[i]) for e in self.task_experts[i]] for i in range(self.t)]
        shared_outs = [e(shared_input) for e in self.shared_experts]
        next_inputs, task_weights = [], []
        for i in range(self.t):
            w = self.task_gates[i](task_inputs[i])  # [B, k+S]
            outs = torch.stack(task_outs[i] + shared_outs, dim=1)  # [B, k+S, d]
            next_inputs.append((w.unsqueeze(-1) * outs).sum(dim=1))
            task_weights.append(w)
        shared_next = shared_w = None
        if self.shared_gate is not None:
            shared_w = self.shared_gate(shared_input)
            all_outs = torch.stack([o for outs in task_outs for o in outs] + shared_outs, dim=1)
            shared_next = (shared_w.unsqueeze(-1) * all_outs).sum(dim=1)
        return next_inputs, shared_next, torch.stack(task_weights, dim=1), shared_w


class ReferenceModel(nn.Module):
    def __init__(self, cfg: ModelConfig, in_dim: int) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        d = cfg.expert_hidden[-1]
        self.levels = nn.ModuleList(
            RefLevel(cfg, in_dim if i == 0 else d, last=i == cfg.num_levels - 1) for i in range(cfg.num_levels)
        )
        self.towers = nn.ModuleList(
            _mlp(d, [*cfg.tower_hidden, 1], cfg, activate_last=False) for _ in range(cfg.num_tasks)
        )

    def forward_with_gates(self, x: torch.Tensor):
        task_inputs, shared, gates = [x] * self.cfg.num_tasks, x, []
        for level in self.levels:
            task_inputs, shared, task_w, shared_w = level(task_inputs, shared)
            gates.append((task_w, shared_w))
        logits = torch.cat([tower(h) for tower, h in zip(self.towers, task_inputs, strict=True)], dim=1)
        return logits, gates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_gates(x)[0]


# ---- copying weights from the batched model into the reference -------------------------


def _linears_and_norms(seq: nn.Sequential):
    linears = [m for m in seq.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in seq.modules() if isinstance(m, nn.BatchNorm1d)]
    return linears, norms


@torch.no_grad()
def _copy_mlp(dst: nn.Sequential, src: StackedMLP, index: int) -> None:
    linears, norms = _linears_and_norms(dst)
    for layer, lin in enumerate(linears):
        lin.weight.copy_(src.layer_weight(index, layer))
        lin.bias.copy_(src.layer_bias(index, layer))
    for layer, bn in enumerate(norms):
        d = src.hidden[layer]
        sl = slice(index * d, (index + 1) * d)
        src_bn = src.norms[layer]
        bn.weight.copy_(src_bn.weight[sl])
        bn.bias.copy_(src_bn.bias[sl])
        bn.running_mean.copy_(src_bn.running_mean[sl])
        bn.running_var.copy_(src_bn.running_var[sl])


def reference_from(fast: MultiTaskModel) -> ReferenceModel:
    """A ReferenceModel holding exactly the weights of `fast`."""
    ref = ReferenceModel(fast.cfg, fast.in_dim)
    t, k = ref.cfg.num_tasks, ref.cfg.task_experts
    for ref_level, level in zip(ref.levels, fast.ple.levels, strict=True):
        for i in range(t):
            for j in range(k):
                src = level.experts if level.first else level.task_experts
                _copy_mlp(ref_level.task_experts[i][j], src, i * k + j)
            _copy_mlp(ref_level.task_gates[i][0], level.task_gates, i)
        for j in range(ref.cfg.shared_experts):
            if level.first:
                _copy_mlp(ref_level.shared_experts[j], level.experts, t * k + j)
            else:
                _copy_mlp(ref_level.shared_experts[j], level.shared_experts, j)
        if level.shared_gate is not None:
            _copy_mlp(ref_level.shared_gate[0], level.shared_gate, 0)
    for i, tower in enumerate(ref.towers):
        _copy_mlp(tower, fast.towers, i)
    return ref.train(fast.training)
