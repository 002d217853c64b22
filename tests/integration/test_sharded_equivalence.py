"""Sharded training on 2 gloo ranks == one unsharded process on the same global batches.

Each rank steps on its half of every global batch; the reference steps on the whole global
batch with loss = mean over the two halves of each half's loss, which is DMP's convention:
each rank's loss is a mean over its rows, DDP averages dense gradients over ranks and torchrec's
embedding collectives divide table gradients by the world size (GRADIENT_DIVISION). (A plain
mean over the global batch would differ: the CVR loss is a mean over clicked rows, and the
halves have different numbers of clicks.)

The reference updates tables with TableOptimizer (fbgemm's row-wise Adagrad in plain torch),
with one accumulator per row per column shard where the plan splits a table by columns, as
fbgemm does. Data-parallel tables run fbgemm's dense kernel, whose op warns that it has "no
autograd kernel"; matching the reference after several steps proves their gradients are right.
"""

from __future__ import annotations

import pytest
import torch

from helpers.dist_utils import assemble, load_full_into, local_pieces, run_on_ranks
from helpers.tiny_model import GLOBAL_BATCH, MODEL, global_batch, tiny_spec
from pipeline.data.collate import collate
from pipeline.train.config import TrainConfig
from pipeline.train.schedule import LRSchedule, lr_factor, set_learning_rates
from pipeline.train.sharded_model import build_sharded_model, build_unsharded_model

WORLD = 2
STEPS = 3
CASES = [  # (sharding type, sparse optimizer, loss options)
    ("data_parallel", "rowwise_adagrad", "masked"),
    ("table_wise", "rowwise_adagrad", "masked"),
    ("column_wise", "rowwise_adagrad", "masked"),
    ("table_column_wise", "rowwise_adagrad", "masked"),
    ("table_wise", "sgd", "esmm"),  # sgd: any gradient scale error shows; esmm + weights: the loss options
    ("table_wise", "sgd", "scheduled"),  # a learning rate that changes every step reaches the fused tables
    ("data_parallel", "sgd", "scheduled"),  # ... and the data-parallel ones (TableOptimizer)
    ("table_wise", "rowwise_adagrad", "uncertainty"),  # learned task weights: the same on every rank
]
LOSS = {
    "masked": {},
    "esmm": {"esmm": True, "loss_weights": [1.0, 0.5]},
    "scheduled": {"lr_schedule": LRSchedule(kind="step", step_every=1, gamma=0.25)},  # 1, 1/4, 1/16
    "uncertainty": {"loss_balancing": "uncertainty"},
}
# Large enough that wrong gradients show within 3 steps. Table gradients are small (~1e-4), and
# SGD, unlike Adagrad/Adam, shows their scale, so it gets a large rate: a factor-2 error in the
# gradient averaging then moves rows by ~1e-2, far outside the tolerance.
SPARSE_LR = {"rowwise_adagrad": 0.1, "sgd": 20.0}
DENSE_LR = 0.01


def train_config(opt: str, loss: str, batch_size: int) -> TrainConfig:
    return TrainConfig(
        sparse_optimizer=opt, sparse_lr=SPARSE_LR[opt], dense_lr=DENSE_LR, batch_size=batch_size, **LOSS[loss]
    )


def with_task_weights(initial: dict[str, torch.Tensor], loss: str) -> dict[str, torch.Tensor]:
    """The shared initial weights, plus the learned task weights' starting point where there are some."""
    return {**initial, "log_vars": torch.zeros(2)} if loss == "uncertainty" else initial


def rank_slice(table, rank: int):
    per = GLOBAL_BATCH // WORLD
    return table.slice(rank * per, per)


def column_blocks(plan) -> dict[str, list[int]]:
    """{table: widths of its column shards, left to right} from a sharding plan."""
    out = {}
    for module_plan in plan.plan.values():
        for table, ps in module_plan.items():
            if ps.sharding_spec is not None:
                shards = sorted(ps.sharding_spec.shards, key=lambda s: s.shard_offsets[1])
                out[table] = [s.shard_sizes[1] for s in shards if s.shard_offsets[0] == 0]
    return out


def _train_sharded(rank: int, world_size: int, initial: dict[str, torch.Tensor]) -> dict:
    spec = tiny_spec()
    results = {}
    for sharding_type, opt, loss in CASES:
        sm = build_sharded_model(
            spec,
            MODEL,
            train_config(opt, loss, GLOBAL_BATCH // world_size),
            torch.device("cpu"),
            sharding_type=sharding_type,
            min_column_shard_dim=4,
        )
        load_full_into(sm.model.state_dict(), with_task_weights(initial, loss))
        train = train_config(opt, loss, GLOBAL_BATCH // world_size)
        for step in range(STEPS):
            # As in the train pipeline: the rate is set, then zero_grad hands it to the fused
            # tables before the backward that updates them.
            set_learning_rates(sm.lr_groups, lr_factor(train.lr_schedule, step, STEPS))
            sm.optimizer.zero_grad()
            total, _ = sm.model(collate(rank_slice(global_batch(step), rank), spec))
            total.backward()
            sm.optimizer.step()
        results[(sharding_type, opt, loss)] = {
            "params": local_pieces(sm.model.state_dict()),
            "kernels": {t: ps.compute_kernel for mp in sm.plan.plan.values() for t, ps in mp.items()},
            "blocks": column_blocks(sm.plan),
        }
    return results


def _train_reference(
    initial: dict[str, torch.Tensor], opt: str, loss: str, blocks: dict[str, list[int]]
) -> dict[str, torch.Tensor]:
    spec = tiny_spec()
    ref = build_unsharded_model(spec, MODEL, train_config(opt, loss, GLOBAL_BATCH), column_blocks=blocks)
    ref.model.load_state_dict(with_task_weights(initial, loss))
    train = train_config(opt, loss, GLOBAL_BATCH)
    for step in range(STEPS):
        set_learning_rates(ref.lr_groups(train), lr_factor(train.lr_schedule, step, STEPS))
        table = global_batch(step)
        loss = sum(ref.model(collate(rank_slice(table, r), spec))[0] for r in range(WORLD)) / WORLD
        ref.zero_grad()
        loss.backward()
        ref.step()
    return {k: v.detach() for k, v in ref.model.state_dict().items()}


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(0)
    initial = {
        k: v.detach().clone()
        for k, v in build_unsharded_model(tiny_spec(), MODEL, TrainConfig()).model.state_dict().items()
    }
    per_rank = run_on_ranks(_train_sharded, WORLD, initial)
    return initial, per_rank


@pytest.mark.parametrize("sharding_type,opt,loss", CASES)
def test_sharded_training_matches_unsharded(runs, sharding_type, opt, loss):
    initial, per_rank = runs
    case = (sharding_type, opt, loss)
    result = per_rank[0][case]
    sharded = assemble([r[case]["params"] for r in per_rank])
    reference = _train_reference(initial, opt, loss, result["blocks"])

    assert sharded.keys() == reference.keys()
    for key, want in reference.items():
        torch.testing.assert_close(sharded[key], want, rtol=1e-4, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")
        # Every parameter moved, so the comparison above is not between two untouched copies.
        assert not torch.allclose(want, with_task_weights(initial, loss)[key]), f"{key} did not train"

    kernels = set(result["kernels"].values())
    assert kernels == ({"dense"} if sharding_type == "data_parallel" else {"fused"}), kernels
    if "column" in sharding_type:  # the plan really split the dim-8 tables by columns
        assert result["blocks"]["user"] == [4, 4] and result["blocks"]["item"] == [4, 4], result["blocks"]
