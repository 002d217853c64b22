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

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from dist_utils import assemble, load_full_into, local_pieces, run_on_ranks
from pipeline.collate import collate
from pipeline.feature_spec import FeatureSpec, spec_from_dict
from pipeline.sharding import allowed_sharding_types, make_plan
from pipeline.sharded_model import TableLayout, TableOptimizer, build_sharded_model, build_unsharded_model
from pipeline.synthetic import generate_table
from pipeline.train_module import esmm_losses
from ple_model.config import ModelConfig

WORLD = 2
STEPS = 3
GLOBAL_BATCH = 96
CASES = [  # (sharding type, sparse optimizer, loss options)
    ("data_parallel", "rowwise_adagrad", "masked"),
    ("table_wise", "rowwise_adagrad", "masked"),
    ("column_wise", "rowwise_adagrad", "masked"),
    ("table_column_wise", "rowwise_adagrad", "masked"),
    ("table_wise", "sgd", "esmm"),  # sgd: any gradient scale error shows; esmm + weights: the loss options
]
LOSS = {"masked": {}, "esmm": {"esmm": True, "loss_weights": [1.0, 0.5]}}
MODEL = ModelConfig(expert_hidden=[16], tower_hidden=[8])
# Large enough that wrong gradients show within 3 steps. Table gradients are small (~1e-4), and
# SGD, unlike Adagrad/Adam, shows their scale, so it gets a large rate: a factor-2 error in the
# gradient averaging then moves rows by ~1e-2, far outside the tolerance.
SPARSE_LR = {"rowwise_adagrad": 0.1, "sgd": 20.0}
DENSE_LR = 0.01


def tiny_spec() -> FeatureSpec:
    """configs/synthetic.yaml with tiny tables: ids hash into few rows, so rows are shared by
    many examples (gradients accumulate), and dim 8 tables split into two column shards."""
    with open(Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml") as f:
        data = yaml.safe_load(f)
    data["tables"] = [
        {"name": "user", "vocab_size": 64, "dim": 8},
        {"name": "item", "vocab_size": 48, "dim": 8, "pooling": "mean"},
        {"name": "category", "hash_buckets": 32, "dim": 4},
        {"name": "device", "hash_buckets": 8, "dim": 4},
    ]
    return spec_from_dict(data)


def global_batch(step: int):
    return generate_table(GLOBAL_BATCH, seed=1000 + step)


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
        sm = build_sharded_model(spec, MODEL, torch.device("cpu"), sharding_type=sharding_type, sparse_optimizer=opt,
                                 min_column_shard_dim=4, batch_size=GLOBAL_BATCH // world_size,
                                 sparse_lr=SPARSE_LR[opt], dense_lr=DENSE_LR, **LOSS[loss])
        load_full_into(sm.model.state_dict(), initial)
        for step in range(STEPS):
            total, _ = sm.model(collate(rank_slice(global_batch(step), rank), spec))
            total.backward()
            sm.optimizer.step()
            sm.optimizer.zero_grad()
        results[(sharding_type, opt, loss)] = {
            "params": local_pieces(sm.model.state_dict()),
            "kernels": {t: ps.compute_kernel for mp in sm.plan.plan.values() for t, ps in mp.items()},
            "blocks": column_blocks(sm.plan),
        }
    return results


def _train_reference(initial: dict[str, torch.Tensor], opt: str, loss: str,
                     blocks: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    spec = tiny_spec()
    ref = build_unsharded_model(spec, MODEL, sparse_optimizer=opt, column_blocks=blocks,
                                sparse_lr=SPARSE_LR[opt], dense_lr=DENSE_LR, **LOSS[loss])
    ref.model.load_state_dict(initial)
    for step in range(STEPS):
        table = global_batch(step)
        loss = sum(ref.model(collate(rank_slice(table, r), spec))[0] for r in range(WORLD)) / WORLD
        ref.zero_grad()
        loss.backward()
        ref.step()
    return {k: v.detach() for k, v in ref.model.state_dict().items()}


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(0)
    initial = {k: v.detach().clone() for k, v in build_unsharded_model(tiny_spec(), MODEL).model.state_dict().items()}
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
        torch.testing.assert_close(sharded[key], want, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
        # Every parameter moved, so the comparison above is not between two untouched copies.
        assert not torch.allclose(want, initial[key]), f"{key} did not train"

    kernels = set(result["kernels"].values())
    assert kernels == ({"dense"} if sharding_type == "data_parallel" else {"fused"}), kernels
    if "column" in sharding_type:  # the plan really split the dim-8 tables by columns
        assert result["blocks"]["user"] == [4, 4] and result["blocks"]["item"] == [4, 4], result["blocks"]


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
    want = torch.stack([F.binary_cross_entropy(p_ctr, labels[:, 0]), F.binary_cross_entropy(p_ctcvr, labels[:, 0] * labels[:, 1])])
    torch.testing.assert_close(esmm_losses(logits, labels), want)
    # Finite where pCTCVR rounds to 1 in float32 (naive log(1 - p) is -inf there).
    assert torch.isfinite(esmm_losses(torch.tensor([[30.0, 30.0]]), torch.tensor([[1.0, 0.0]]))).all()


def test_adam_tables_need_cuda():
    with pytest.raises(ValueError, match="needs CUDA"):
        build_unsharded_model(tiny_spec(), MODEL, sparse_optimizer="adam")


def test_row_wise_is_refused_on_cpu_with_the_reason():
    assert "row_wise" in allowed_sharding_types("cuda") and "row_wise" not in allowed_sharding_types("cpu")
    module = build_unsharded_model(tiny_spec(), MODEL).model
    with pytest.raises(ValueError, match="reduce-scatter, which gloo lacks"):
        make_plan(module, 2, torch.device("cpu"), sharding_type="row_wise")
