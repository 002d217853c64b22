"""The table optimizer (fbgemm's update rules in plain torch), the ESMM loss, and what the CPU
refuses (Adam tables, row-wise sharding) with the reason. tests/integration/test_sharded_equivalence.py
checks sharded training against the unsharded reference on 2 ranks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.tiny_model import MODEL, tiny_spec
from pipeline.train.config import TrainConfig
from pipeline.train.losses import esmm_losses
from pipeline.train.sharded_model import TableLayout, TableOptimizer, build_unsharded_model
from pipeline.train.sharding import allowed_sharding_types, make_plan


def test_table_optimizer_adam_equals_torch_adam_when_every_row_has_a_gradient():
    """fbgemm's Adam (CUDA only) updates only the rows in the batch; where every row has a
    gradient that is plain Adam, which pins TableOptimizer's formula (bias correction, eps)."""
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(5, 4))
    w2 = torch.nn.Parameter(w1.detach().clone())
    ours = TableOptimizer([(w1, [TableLayout(0, 5, 4, (4,))])], "adam", lr=0.1)
    ref = torch.optim.Adam([w2], lr=0.1, eps=1e-8)
    for _ in range(3):
        g = torch.randn(5, 4)
        w1.grad, w2.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(w1, w2)
    # A row without gradient is left alone (lazy), unlike torch's dense Adam.
    before = w1.detach().clone()
    g = torch.randn(5, 4)
    g[2] = 0
    w1.grad = g
    ours.step()
    assert torch.equal(w1[2], before[2]) and not torch.equal(w1[0], before[0])


def test_esmm_loss_is_bce_of_the_product_probability():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-4.0, 3.0]])
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    p_ctr, p_ctcvr = torch.sigmoid(logits[:, 0]), torch.sigmoid(logits[:, 0]) * torch.sigmoid(logits[:, 1])
    want = torch.stack(
        [F.binary_cross_entropy(p_ctr, labels[:, 0]), F.binary_cross_entropy(p_ctcvr, labels[:, 0] * labels[:, 1])]
    )
    torch.testing.assert_close(esmm_losses(logits, labels), want)
    # Finite where pCTCVR rounds to 1 in float32 (naive log(1 - p) is -inf there).
    assert torch.isfinite(esmm_losses(torch.tensor([[30.0, 30.0]]), torch.tensor([[1.0, 0.0]]))).all()


def test_adam_tables_need_cuda():
    with pytest.raises(ValueError, match="needs CUDA"):
        build_unsharded_model(tiny_spec(), MODEL, TrainConfig(sparse_optimizer="adam"))


def test_row_wise_is_refused_on_cpu_with_the_reason():
    assert "row_wise" in allowed_sharding_types("cuda") and "row_wise" not in allowed_sharding_types("cpu")
    module = build_unsharded_model(tiny_spec(), MODEL, TrainConfig()).model
    with pytest.raises(ValueError, match="reduce-scatter, which gloo lacks"):
        make_plan(module, 2, torch.device("cpu"), sharding_type="row_wise")
