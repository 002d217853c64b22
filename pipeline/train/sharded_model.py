"""Build the training model: TrainModule(RecModel) with its EmbeddingBagCollection sharded by
DistributedModelParallel, and one optimizer object for everything.

Who updates what:
- Sharded tables (table/column/row-wise...): fbgemm's TBE, fused into the backward pass
  (`apply_optimizer_in_backward`); `sharded.model.fused_optimizer` exposes its state.
- Data-parallel tables: torchrec gives them fbgemm's *dense* kernel, which has no fused
  optimizer; DDP averages their gradient and `TableOptimizer` below applies the same update
  rule as fbgemm would, so choosing data_parallel does not change the math.
- Everything else (PLE, towers): Adam with `dense_lr`, gradients averaged by DDP.
`ShardedModel.optimizer` is a torchrec CombinedOptimizer of all of these: `.step()` steps the
non-fused ones (the fused step already happened in backward) and `.state_dict()` covers all
of them, keyed by parameter name, which torch.distributed.checkpoint can save and reshard.

Gradient convention (what the unsharded reference must match): each rank's loss is the mean
over its own batch; DDP averages dense gradients across ranks and torchrec's sparse collectives
divide embedding gradients by the world size (torchrec.distributed.comm_ops.GRADIENT_DIVISION,
on by default), so every parameter sees d/dθ of mean_over_ranks(rank loss).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchrec import optim as trec_optim
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper

from pipeline.data.feature_spec import FeatureSpec
from pipeline.train.config import TrainConfig
from pipeline.train.module import TrainModule, rec_model
from pipeline.train.sharding import make_plan, sharders
from ple_model.config import ModelConfig

SPARSE_OPTIMIZERS = ("rowwise_adagrad", "adam", "sgd")
# fbgemm's CPU TBE implements only some update rules (Adam asserts "not supported in CPU mode").
CPU_SPARSE_OPTIMIZERS = ("rowwise_adagrad", "sgd")
TABLE_EPS = 1e-8  # passed explicitly to fbgemm and to TableOptimizer, so both use the same
ADAM_BETAS = (0.9, 0.999)


def check_sparse_optimizer(name: str, device: torch.device) -> None:
    if name not in SPARSE_OPTIMIZERS:
        raise ValueError(f"sparse_optimizer must be one of {SPARSE_OPTIMIZERS}, got {name!r}")
    if device.type == "cpu" and name not in CPU_SPARSE_OPTIMIZERS:
        raise ValueError(
            f"sparse_optimizer {name!r} needs CUDA: fbgemm's CPU kernels implement only {CPU_SPARSE_OPTIMIZERS}"
        )


def _fused_optimizer(name: str, lr: float) -> tuple[type, dict]:
    """(torchrec optimizer class, kwargs) that torchrec maps to the fbgemm TBE update rule."""
    if name == "rowwise_adagrad":
        return trec_optim.RowWiseAdagrad, {"lr": lr, "eps": TABLE_EPS}
    if name == "adam":
        return trec_optim.Adam, {"lr": lr, "eps": TABLE_EPS, "beta1": ADAM_BETAS[0], "beta2": ADAM_BETAS[1]}
    return trec_optim.SGD, {"lr": lr}


# -- fbgemm's table update rules in plain torch ------------------------------------------------
@dataclass(frozen=True)
class TableLayout:
    """One table inside a (possibly flat, multi-table) parameter. Row-wise Adagrad keeps one
    accumulator per row *and column block*: fbgemm averages g^2 over the columns it holds, so a
    column-wise sharded table has one accumulator per row per shard."""

    offset: int
    rows: int
    dim: int
    col_blocks: tuple[int, ...]


class TableOptimizer(torch.optim.Optimizer):
    """fbgemm TBE update rules (weight decay 0) on dense gradients:

    rowwise_adagrad: m_r += mean_block(g_r^2);  w_r -= lr * g_r / (sqrt(m_r) + eps)
    sgd:             w -= lr * g
    adam:            rows with a non-zero gradient only (fbgemm updates only the rows in the
                     batch; a row in the batch with an exactly-zero gradient is the one case that
                     differs), bias-corrected with the optimizer's global step as fbgemm does.
    Rows with a zero gradient are unchanged by rowwise_adagrad and sgd, as in fbgemm.
    """

    def __init__(self, tables: Sequence[tuple[nn.Parameter, Sequence[TableLayout]]], kind: str, lr: float) -> None:
        if kind not in SPARSE_OPTIMIZERS:
            raise ValueError(f"unknown table optimizer {kind!r}")
        self.kind = kind
        self._layouts = {id(p): list(layouts) for p, layouts in tables}
        super().__init__([p for p, _ in tables], {"lr": lr, "eps": TABLE_EPS, "betas": ADAM_BETAS})

    def _views(self, flat: torch.Tensor, layout: TableLayout) -> list[torch.Tensor]:
        table = flat.view(-1)[layout.offset : layout.offset + layout.rows * layout.dim].view(layout.rows, layout.dim)
        return list(table.split(list(layout.col_blocks), dim=1))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                layouts = self._layouts[id(p)]
                if self.kind == "sgd":
                    p.add_(p.grad, alpha=-lr)
                elif self.kind == "rowwise_adagrad":
                    if not state:
                        n = sum(t.rows * len(t.col_blocks) for t in layouts)
                        state["momentum1"] = torch.zeros(n, dtype=p.dtype, device=p.device)
                    start = 0
                    for t in layouts:
                        for w, g in zip(self._views(p, t), self._views(p.grad, t), strict=True):
                            m = state["momentum1"][start : start + t.rows]
                            m.add_(g.pow(2).mean(dim=1))
                            w.addcdiv_(g, (m.sqrt() + eps).unsqueeze(1), value=-lr)
                            start += t.rows
                else:
                    self._adam(p, state, layouts, group)
        return None

    def _adam(self, p: torch.Tensor, state: dict, layouts: list[TableLayout], group: dict) -> None:
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        (b1, b2), step = group["betas"], state["step"].item()
        for t in layouts:
            whole = TableLayout(t.offset, t.rows, t.dim, (t.dim,))  # Adam is element-wise: blocks do not matter
            assert p.grad is not None  # step() skips parameters without a gradient
            w, g, m, v = (self._views(x, whole)[0] for x in (p, p.grad, state["exp_avg"], state["exp_avg_sq"]))
            rows = g.ne(0).any(dim=1).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            g = g[rows]
            m[rows] = m[rows] * b1 + g * (1 - b1)
            v[rows] = v[rows] * b2 + g * g * (1 - b2)
            m_hat, v_hat = m[rows] / (1 - b1**step), v[rows] / (1 - b2**step)
            w[rows] -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])


def data_parallel_tables(dmp: DistributedModelParallel, plan: ShardingPlan) -> dict[str, nn.Parameter]:
    """{name: weight} of the data-parallel tables. torchrec exposes each as a per-table view of
    fbgemm's flat dense weight (TableBatchedEmbeddingSlice) whose `.grad` views the flat grad."""
    names = {
        f"{path}.embedding_bags.{table}.weight"
        for path, module_plan in plan.plan.items()
        for table, ps in module_plan.items()
        if ps.sharding_type == "data_parallel"
    }
    return {n: p for n, p in dmp.named_parameters() if n in names}


# -- the sharded model ---------------------------------------------------------------------------
@dataclass
class ShardedModel:
    model: DistributedModelParallel  # model(batch) -> (loss, (per_task, logits, labels, masks))
    optimizer: CombinedOptimizer  # fused tables + data-parallel tables + dense; zero_grad/step/state_dict
    plan: ShardingPlan
    lr_groups: list[tuple[list[dict], float]]  # (param groups, configured lr): what a schedule scales

    @property
    def train_module(self) -> TrainModule:
        """The unwrapped TrainModule (e.g. to set loss_weights)."""
        return self.model.module


def _task_weights(spec: FeatureSpec, model_cfg: ModelConfig, train: TrainConfig) -> list[float]:
    """The loss weights at step 0, after checking the tasks agree (spec, model, weights, ESMM)."""
    if model_cfg.num_tasks != len(spec.tasks):
        raise ValueError(f"model num_tasks={model_cfg.num_tasks} but the spec has tasks {spec.task_names}")
    weights = list(train.loss_weights) if train.loss_weights is not None else [1.0] * len(spec.tasks)
    if len(weights) != len(spec.tasks):
        raise ValueError(f"{len(weights)} loss weights for {len(spec.tasks)} tasks {spec.task_names}")
    if train.esmm and len(spec.tasks) != 2:
        raise ValueError(f"esmm needs exactly two tasks [ctr, cvr], the spec has {spec.task_names}")
    return weights


def _keyed(params: dict[str, nn.Parameter], factory) -> KeyedOptimizerWrapper:
    return KeyedOptimizerWrapper(params, factory)


def build_sharded_model(
    spec: FeatureSpec,
    model_cfg: ModelConfig,
    train: TrainConfig,
    device: torch.device,
    *,
    sharding_type: str | dict[str, str] | None = None,
    pg: dist.ProcessGroup | None = None,
    min_column_shard_dim: int | None = None,
    memory_budget: int | None = None,
) -> ShardedModel:
    """Needs an initialised default process group (Ray Train's, or the caller's); `pg` defaults to it.
    Every rank must call this with the same arguments. Dense weights start as rank 0's (DDP
    broadcasts them); tables are initialised per shard (data-parallel ones broadcast from rank 0).

    `train` gives the optimizers, learning rates, loss weights (at step 0), ESMM, and the batch
    size the planner assumes; `sharding_type` overrides `train.sharding_type` (a resumed run
    plans with its checkpoint's types); `memory_budget`: bytes per rank the tables must fit in
    (sharding.worker_memory_budget), None for torchrec's default."""
    device = torch.device(device)
    check_sparse_optimizer(train.sparse_optimizer, device)
    pg = pg or dist.group.WORLD
    weights = _task_weights(spec, model_cfg, train)
    module = TrainModule(
        rec_model(spec, model_cfg, device="meta", managed_device=device),
        weights,
        train.esmm,
        uncertainty=train.loss_balancing == "uncertainty",
    )
    opt_cls, opt_kwargs = _fused_optimizer(train.sparse_optimizer, train.sparse_lr)
    with warnings.catch_warnings():  # torchrec's wrapper warns that it forwards to torch's private API
        warnings.simplefilter("ignore", DeprecationWarning)
        apply_optimizer_in_backward(opt_cls, module.model.ebc.parameters(), opt_kwargs)

    plan = make_plan(
        module,
        dist.get_world_size(pg),
        device,
        sharding_type or train.sharding_type,
        train.batch_size,
        pg,
        min_column_shard_dim,
        memory_budget,
        train.sparse_optimizer,
        # Managed tables' mappings are replicated, not sharded: every worker holds them in full.
        reserved=module.model.managed.mapping_bytes() if module.model.managed is not None else None,
    )
    dmp = DistributedModelParallel(
        module, env=ShardingEnv.from_process_group(pg), device=device, plan=plan, sharders=sharders()
    )

    # torchrec marks every parameter its fused optimizer updates with `_in_backward_optimizers`.
    named = {n: p for n, p in dmp.named_parameters() if not hasattr(p, "_in_backward_optimizers")}
    dp_tables = data_parallel_tables(dmp, plan)
    optims: list[tuple[str, KeyedOptimizer]] = [("", dmp.fused_optimizer)]
    if dp_tables:
        layouts = [(p, [TableLayout(0, p.shape[0], p.shape[1], (p.shape[1],))]) for p in dp_tables.values()]
        optims.append(
            ("", _keyed(dp_tables, lambda _params: TableOptimizer(layouts, train.sparse_optimizer, train.sparse_lr)))
        )
    dense = {n: p for n, p in named.items() if n not in dp_tables}
    optims.append(("", _keyed(dense, lambda params: torch.optim.Adam(params, lr=train.dense_lr))))
    # Every optimizer but the last steps tables (the fused one and TableOptimizer).
    lr_groups = [(list(o.param_groups), train.sparse_lr) for _, o in optims[:-1]]
    lr_groups.append((list(optims[-1][1].param_groups), train.dense_lr))
    return ShardedModel(model=dmp, optimizer=CombinedOptimizer(optims), plan=plan, lr_groups=lr_groups)


# -- the unsharded reference -------------------------------------------------------------------
@dataclass
class UnshardedModel:
    model: TrainModule
    table_optimizer: TableOptimizer
    dense_optimizer: torch.optim.Adam

    def zero_grad(self) -> None:
        self.table_optimizer.zero_grad(set_to_none=True)
        self.dense_optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.table_optimizer.step()
        self.dense_optimizer.step()

    def lr_groups(self, train: TrainConfig) -> list[tuple[list[dict], float]]:
        return [
            (self.table_optimizer.param_groups, train.sparse_lr),
            (self.dense_optimizer.param_groups, train.dense_lr),
        ]


def build_unsharded_model(
    spec: FeatureSpec,
    model_cfg: ModelConfig,
    train: TrainConfig,
    device: torch.device | str = "cpu",
    *,
    column_blocks: dict[str, Sequence[int]] | None = None,
) -> UnshardedModel:
    """One process, no DMP: tables updated by TableOptimizer (fbgemm's rule in plain torch),
    the rest by Adam, stepped explicitly (not in backward) after `loss.backward()`; `train`
    as for build_sharded_model.

    column_blocks: {table: column shard widths} to reproduce row-wise Adagrad of a column-wise
    sharded table (one accumulator per row per shard); default one block per table.
    """
    check_sparse_optimizer(train.sparse_optimizer, torch.device(device))
    weights = _task_weights(spec, model_cfg, train)
    module = TrainModule(
        rec_model(spec, model_cfg, device=device),
        weights,
        train.esmm,
        uncertainty=train.loss_balancing == "uncertainty",
    )
    module.to(device)
    blocks = column_blocks or {}
    tables = []
    for config in module.model.ebc.embedding_bag_configs():
        weight = module.model.ebc.embedding_bags[config.name].weight
        cols = tuple(blocks.get(config.name, (config.embedding_dim,)))
        if sum(cols) != config.embedding_dim:
            raise ValueError(f"column blocks {cols} of table {config.name!r} do not sum to {config.embedding_dim}")
        tables.append((weight, [TableLayout(0, config.num_embeddings, config.embedding_dim, cols)]))
    return UnshardedModel(
        model=module,
        table_optimizer=TableOptimizer(tables, train.sparse_optimizer, train.sparse_lr),
        # Everything but the tables: the dense model, and the learned task weights if any.
        dense_optimizer=torch.optim.Adam(
            [p for n, p in module.named_parameters() if not n.startswith("model.ebc.")], lr=train.dense_lr
        ),
    )
