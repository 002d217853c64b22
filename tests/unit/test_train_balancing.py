"""Loss balancing between tasks: uncertainty weighting's optimum, and the direction its weights
move on real batches where one task is pure noise."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from helpers.tiny_model import MODEL, global_batch, tiny_spec
from pipeline.data.collate import collate
from pipeline.train.balancing import DynamicWeightAverage
from pipeline.train.config import TrainConfig
from pipeline.train.losses import uncertainty_weighted
from pipeline.train.sharded_model import build_unsharded_model


def test_uncertainty_weights_settle_at_one_over_twice_the_loss():
    losses = torch.tensor([0.2, 0.8])
    log_vars = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([log_vars], lr=0.05)
    for _ in range(2000):
        opt.zero_grad()
        uncertainty_weighted(losses, log_vars).backward()
        opt.step()
    torch.testing.assert_close(torch.exp(-log_vars.detach()), 1 / (2 * losses), rtol=0.02, atol=0.0)


def _noisy_click(step: int) -> pa.Table:
    """ctr labels are coin flips (nothing to learn), cvr labels all 0 (easy to learn)."""
    t = global_batch(step)
    g = torch.Generator().manual_seed(step)
    click = (torch.rand(t.num_rows, generator=g) < 0.5).to(torch.int8).numpy()
    t = t.set_column(t.schema.get_field_index("click"), "click", pa.array(click))
    return t.set_column(t.schema.get_field_index("conversion"), "conversion", pa.array(click * 0))


def test_the_noisier_task_gets_the_smaller_weight():
    spec = tiny_spec()
    ref = build_unsharded_model(spec, MODEL, TrainConfig(loss_balancing="uncertainty", dense_lr=0.01))
    assert ref.model.task_weights().tolist() == [1.0, 1.0]
    for step in range(150):
        loss, (per_task, *_) = ref.model(collate(_noisy_click(step), spec))
        ref.zero_grad()
        loss.backward()
        ref.step()
    ctr_weight, cvr_weight = ref.model.task_weights().tolist()
    assert per_task[0] > 0.6 and per_task[1] < 0.2  # coin flips stay at ~log 2; all-zero labels are learnt
    assert ctr_weight < 1.0 < cvr_weight


def test_fixed_weights_add_no_parameter():
    ref = build_unsharded_model(tiny_spec(), MODEL, TrainConfig())
    assert ref.model.log_vars is None and "log_vars" not in ref.model.state_dict()
    with pytest.raises(ValueError):
        TrainConfig(loss_balancing="gradnorm")


def test_dynamic_weight_average_favours_the_task_whose_loss_stalls():
    dwa = DynamicWeightAverage(num_tasks=2, window=2, temperature=2.0)
    assert dwa.weights().tolist() == [1.0, 1.0]
    for losses in ([1.0, 1.0], [1.0, 1.0]):  # window 1: both at 1
        dwa.observe(torch.tensor(losses))
    dwa.close_window()
    assert dwa.weights().tolist() == [1.0, 1.0]  # one window is not a rate yet
    for losses in ([0.5, 0.9], [0.5, 0.9]):  # window 2: ctr halves, cvr barely moves
        dwa.observe(torch.tensor(losses))
    dwa.close_window()
    ratio = torch.tensor([0.5, 0.9])
    torch.testing.assert_close(dwa.weights(), 2 * torch.softmax(ratio / 2.0, dim=0))
    w = dwa.weights().tolist()
    assert w[1] > 1.0 > w[0] and sum(w) == pytest.approx(2.0)
    resumed = DynamicWeightAverage(2, 2, 2.0)
    resumed.load(dwa.state())
    assert resumed.weights().tolist() == w
