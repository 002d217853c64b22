"""The PLE model: shapes, gates, batched == loop reference, variants, and that it learns."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from torchmetrics.functional.classification import binary_auroc

from helpers.reference_ple import reference_from
from ple_model import ModelConfig, MultiTaskModel

IN_DIM = 24


def make(seed: int = 0, **overrides) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(ModelConfig(**overrides), IN_DIM)


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("tasks", [2, 3])
def test_shapes_and_gates_sum_to_one(levels, tasks):
    model = make(num_levels=levels, num_tasks=tasks, task_experts=2, shared_experts=3, expert_hidden=[16, 8])
    logits, gates = model.forward_with_gates(torch.randn(10, IN_DIM))
    assert logits.shape == (10, tasks)
    assert len(gates) == levels
    for i, g in enumerate(gates):
        assert g.task.shape == (10, tasks, 2 + 3)
        torch.testing.assert_close(g.task.sum(-1), torch.ones(10, tasks))
        if i == levels - 1:
            assert g.shared is None  # the last level has no shared gate
        else:
            assert g.shared.shape == (10, tasks * 2 + 3)
            torch.testing.assert_close(g.shared.sum(-1), torch.ones(10))


def test_task_gates_are_independent():
    # Regression guard: on the first level all gates read x, they must still differ per task.
    model = make()
    _, gates = model.forward_with_gates(torch.randn(8, IN_DIM))
    assert not torch.allclose(gates[0].task[:, 0], gates[0].task[:, 1])


REFERENCE_CASES = [
    dict(),
    dict(num_levels=3, num_tasks=3, task_experts=1, shared_experts=2, expert_hidden=[32, 16]),
    dict(gate_hidden=[8], tower_hidden=[16, 8], activation="gelu"),
    dict(batch_norm=True, expert_hidden=[16, 16]),
    dict(architecture="mmoe", shared_experts=4),
    dict(architecture="cgc", task_experts=3, shared_experts=0),
    dict(architecture="shared_bottom", expert_hidden=[32, 16]),
]


def _grads_as_reference(model: MultiTaskModel):
    """The batched model's parameter gradients, laid out like the reference's parameters."""
    holder = copy.deepcopy(model)
    with torch.no_grad():
        for p_holder, p in zip(holder.parameters(), model.parameters(), strict=True):
            p_holder.copy_(p.grad)
    return dict(reference_from(holder).named_parameters())


@pytest.mark.parametrize(
    "overrides", REFERENCE_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default"
)
def test_batched_equals_loop_reference(overrides):
    fast = make(**overrides)
    ref = reference_from(fast)
    x_fast = torch.randn(32, IN_DIM, requires_grad=True)
    x_ref = x_fast.detach().clone().requires_grad_(True)
    (out_fast, gates_fast), (out_ref, gates_ref) = fast.forward_with_gates(x_fast), ref.forward_with_gates(x_ref)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    for g, (task_w, shared_w) in zip(gates_fast, gates_ref, strict=True):
        torch.testing.assert_close(g.task, task_w)
        if shared_w is not None:
            torch.testing.assert_close(g.shared, shared_w)

    target = torch.randn_like(out_fast)
    ((out_fast - target) ** 2).sum().backward()
    ((out_ref - target) ** 2).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    expected = _grads_as_reference(fast)
    got = dict(ref.named_parameters())
    assert expected.keys() == got.keys() and len(got) > 0
    for name, grad in expected.items():
        torch.testing.assert_close(got[name].grad, grad, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_batch_of_one():
    model = make(dropout=0.1)
    assert model(torch.randn(1, IN_DIM)).shape == (1, 2)  # training mode, no batch norm
    bn = make(batch_norm=True).eval()  # batch norm needs eval mode for a single row
    assert bn(torch.randn(1, IN_DIM)).shape == (1, 2)


def test_variants_have_the_expected_structure():
    x = torch.randn(6, IN_DIM)
    mmoe = make(architecture="mmoe", shared_experts=3, num_levels=4)
    _, gates = mmoe.forward_with_gates(x)
    assert len(gates) == 1 and gates[0].task.shape == (6, 2, 3)  # one gate per task over shared experts
    cgc = make(architecture="cgc", num_levels=3)
    assert len(cgc.forward_with_gates(x)[1]) == 1
    sb = make(architecture="shared_bottom")
    _, gates = sb.forward_with_gates(x)
    torch.testing.assert_close(gates[0].task, torch.ones(6, 2, 1))  # one bottom, weight 1
    single = make(num_tasks=1)
    assert single(x).shape == (6, 1)


def test_expert_utilisation_is_a_distribution_per_task():
    util = make(num_levels=2).expert_utilisation(torch.randn(64, IN_DIM))
    assert util[0].task.shape == (2, 3) and util[0].shared.shape == (5,)
    torch.testing.assert_close(util[0].task.sum(-1), torch.ones(2))
    assert util[1].shared is None


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(expert_hidden=[]), "expert_hidden"),
        (dict(bogus=1), "bogus"),
        (dict(architecture="mmoe", shared_experts=0), "shared_experts"),
        (dict(activation="swish"), "activation"),
    ],
)
def test_config_errors_name_the_bad_key(bad, field):
    with pytest.raises(ValidationError, match=field):
        ModelConfig(**bad)


def test_wrong_input_width_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected input \[B, 24\]"):
        make()(torch.randn(4, 23))


def planted_two_task_data(n: int, dim: int, seed: int):
    """Two tasks sharing one direction and each with its own: a minimal seesaw setting."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    shared, own_a, own_b = x[:, :4].sum(1), x[:, 4:8].sum(1), x[:, 8:12].sum(1)
    logit_a = shared + own_a - 1.0
    logit_b = shared - own_b + 0.5 * (x[:, 12] * x[:, 13])
    y = torch.stack(
        [torch.bernoulli(torch.sigmoid(logit_a), generator=g), torch.bernoulli(torch.sigmoid(logit_b), generator=g)],
        dim=1,
    )
    return x, y, torch.stack([logit_a, logit_b], 1)


def test_learns_a_planted_two_task_signal():
    x, y, true_logits = planted_two_task_data(12_000, IN_DIM, seed=1)
    x_val, y_val, true_val = planted_two_task_data(4_000, IN_DIM, seed=2)
    model = make(seed=3, expert_hidden=[32], tower_hidden=[16])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(4):
        for idx in torch.randperm(len(x)).split(256):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x_val)
    for t in range(2):
        auc = binary_auroc(pred[:, t], y_val[:, t].long()).item()
        best = binary_auroc(true_val[:, t], y_val[:, t].long()).item()
        assert auc > 0.7, f"task {t}: AUC {auc:.3f}"
        assert auc > best - 0.03, f"task {t}: AUC {auc:.3f} vs best achievable {best:.3f}"
