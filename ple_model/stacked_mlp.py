"""Many independent MLPs evaluated as one batched matrix multiply per layer.

A PLE level holds several experts (and a task has one tower) that are small MLPs of the
same shape. Running them as a Python loop of `nn.Linear` calls costs one kernel launch,
one input re-read and one autograd node per expert; stacking their weights into
`[groups, members, in, out]` turns every layer into a single `bmm`, whatever the count.

Experts are arranged in `groups`: every member of a group sees the same input. PLE's
first level is one group (every expert sees the embedding); later levels have one group
per task (its experts see that task's mixed input) and one shared group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ple_model.config import Activation, make_activation


class StackedMLP(nn.Module):
    """`groups * members` MLPs with identical shapes and independent weights.

    forward(x): x is `[B, groups, in]` (or `[B, in]` when groups == 1);
    returns `[B, groups * members, hidden[-1]]`, experts ordered group-major.
    """

    def __init__(
        self,
        groups: int,
        members: int,
        in_dim: int,
        hidden: Sequence[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        activate_last: bool = True,
    ) -> None:
        super().__init__()
        if groups < 1 or members < 1 or not hidden:
            raise ValueError(
                f"StackedMLP needs groups>=1, members>=1 and hidden sizes, got {groups}, {members}, {hidden}"
            )
        self.groups, self.members, self.in_dim = groups, members, in_dim
        self.hidden = list(hidden)
        self.activate_last = activate_last
        n = groups * members
        dims = [in_dim, *hidden]
        # Layer 0 is stored per group as [in, members * out] so that members sharing an
        # input form one wide GEMM; deeper layers are per expert [n, in, out] (one bmm).
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            shape = (groups, d_in, members * d_out) if i == 0 else (n, d_in, d_out)
            self.weights.append(nn.Parameter(torch.empty(shape)))
            self.biases.append(nn.Parameter(torch.empty(n * d_out)))
        # A logit layer (activate_last=False) gets no norm: it would hold unused parameters.
        activated = [i < len(self.hidden) - 1 or activate_last for i in range(len(self.hidden))]
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(n * d) if batch_norm and act else nn.Identity()
            for d, act in zip(self.hidden, activated, strict=True)
        )
        self.act = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @property
    def n_mlps(self) -> int:
        return self.groups * self.members

    def reset_parameters(self) -> None:
        # Same distribution as nn.Linear's default init, fan_in being the layer input.
        for w, b in zip(self.weights, self.biases, strict=True):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def layer_weight(self, mlp: int, layer: int) -> torch.Tensor:
        """The `[out, in]` weight of one MLP's layer, in nn.Linear's layout (for tests/export)."""
        w = self.weights[layer]
        if layer == 0:
            g, m = divmod(mlp, self.members)
            d_out = self.hidden[0]
            return w[g, :, m * d_out : (m + 1) * d_out].t()
        return w[mlp].t()

    def layer_bias(self, mlp: int, layer: int) -> torch.Tensor:
        d_out = self.hidden[layer]
        return self.biases[layer][mlp * d_out : (mlp + 1) * d_out]

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation of layer 0, `[B, groups * members * hidden[0]]`."""
        if x.dim() == 2:
            if self.groups != 1:
                raise ValueError(f"input [B, in] given to StackedMLP with {self.groups} groups")
            return torch.addmm(self.biases[0], x, self.weights[0][0])
        # [G, B, in] @ [G, in, members*out] -> [G, B, members*out]
        h = torch.bmm(x.transpose(0, 1), self.weights[0])
        return h.transpose(0, 1).reshape(x.shape[0], -1) + self.biases[0]

    def forward_from_first(self, h: torch.Tensor) -> torch.Tensor:
        """Finish the MLPs given layer 0's pre-activation (see `shared_input_forward`)."""
        batch, n = h.shape[0], self.n_mlps
        for layer in range(len(self.hidden)):
            if layer > 0:
                # [n, B, in] @ [n, in, out]: one bmm for every MLP of the stack.
                h = torch.bmm(h.view(batch, n, -1).transpose(0, 1), self.weights[layer])
                h = h.transpose(0, 1).reshape(batch, -1) + self.biases[layer]
            if layer < len(self.hidden) - 1 or self.activate_last:
                h = self.dropout(self.act(self.norms[layer](h)))
        return h.view(batch, n, self.hidden[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_first(self.first_layer(x))


def shared_input_forward(mlps: Sequence[StackedMLP], x: torch.Tensor) -> list[torch.Tensor]:
    """Run single-group stacks that all read the same `x` [B, in] with ONE GEMM for their
    first layers (experts and gates of PLE's first level): `x` is read once forward and
    its gradient is produced by one GEMM instead of one per module plus the sums."""
    if any(m.groups != 1 for m in mlps):
        raise ValueError("shared_input_forward needs single-group stacks")
    weight = torch.cat([m.weights[0][0] for m in mlps], dim=1)
    bias = torch.cat([m.biases[0] for m in mlps])
    parts = torch.addmm(bias, x, weight).split([m.biases[0].numel() for m in mlps], dim=1)
    return [m.forward_from_first(part) for m, part in zip(mlps, parts, strict=True)]
