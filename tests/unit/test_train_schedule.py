"""Learning-rate schedules: the factor at given steps, their config errors, and that applying
it sets what the optimizers step with."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from helpers.tiny_model import MODEL, global_batch, tiny_spec
from pipeline.data.collate import collate
from pipeline.train.config import TrainConfig
from pipeline.train.schedule import LRSchedule, lr_factor, set_learning_rates
from pipeline.train.sharded_model import build_unsharded_model


def test_warmup_then_cosine():
    s = LRSchedule(kind="cosine", warmup_steps=4, min_factor=0.1)
    assert [lr_factor(s, i, 104) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(s, 4, 104) == 1.0  # the first step after warm-up: the full rate
    assert lr_factor(s, 54, 104) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the mean of 1 and the floor
    assert lr_factor(s, 104, 104) == pytest.approx(0.1) and lr_factor(s, 500, 104) == pytest.approx(0.1)
    explicit = LRSchedule(kind="cosine", total_steps=10)
    assert lr_factor(explicit, 5, None) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(LRSchedule(kind="cosine"), 3, None)


def test_step_decay_and_constant():
    s = LRSchedule(kind="step", warmup_steps=2, step_every=3, gamma=0.5)
    assert [lr_factor(s, i, None) for i in range(9)] == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert lr_factor(LRSchedule(), 10**6, None) == 1.0
    with pytest.raises(ValidationError, match="step_every"):
        LRSchedule(kind="step")
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"lr_schedule": {"kind": "cosine", "warmup": 3}})  # misspelt key


def test_the_factor_scales_each_optimizer_from_its_own_rate():
    train = TrainConfig(sparse_optimizer="sgd", sparse_lr=0.5, dense_lr=0.01)
    ref = build_unsharded_model(tiny_spec(), MODEL, train)
    set_learning_rates(ref.lr_groups(train), 0.25)
    assert [g["lr"] for g in ref.table_optimizer.param_groups] == [0.125]
    assert [g["lr"] for g in ref.dense_optimizer.param_groups] == [0.0025]
    # SGD on the tables: the update is lr x gradient, so a quarter of the rate moves a quarter as far.
    table = ref.model.model.ebc.embedding_bags["user"].weight
    before = table.detach().clone()
    loss, _ = ref.model(collate(global_batch(0), tiny_spec()))
    ref.zero_grad()
    loss.backward()
    grad = table.grad.detach().clone()
    ref.step()
    torch.testing.assert_close(table.detach(), before - 0.125 * grad)
