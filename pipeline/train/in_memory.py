"""Single-process training on in-memory generated data (`python -m jobs.train --in-memory`): the
smallest end-to-end check of the model, the collate, the masked losses and the metrics working
together, with no Ray and no sharding."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from pipeline.data.collate import collate
from pipeline.data.feature_spec import FeatureSpec
from pipeline.data.synthetic import best_achievable_auc, generate_table
from pipeline.train.config import GenerateConfig, JobConfig
from pipeline.train.losses import masked_bce_per_task
from pipeline.train.metrics import TaskMetrics
from pipeline.train.module import rec_model
from pipeline.train.reassigned_rows import reset_reassigned_rows, unsharded_tables
from pipeline.train.schedule import lr_factor, set_learning_rates


def train_in_memory(cfg: JobConfig, spec: FeatureSpec, log: Callable[[str], None] = print) -> dict[str, float]:
    """Train `cfg.model` for `cfg.train.epochs` on `cfg.data.generate.rows` generated rows (its
    catalogue sizes and conflict; the generator's defaults without a `generate` section), then
    evaluate on a quarter as many fresh rows: {task}/auc, logloss, calibration, count, best_auc."""
    t = cfg.train
    gen = cfg.data.generate or GenerateConfig()
    rows, seed, batch_size, synthetic = gen.rows, t.seed, t.batch_size, gen.synthetic()
    torch.manual_seed(seed)
    train = generate_table(rows, seed=seed, config=synthetic)
    val = generate_table(max(rows // 4, 1000), seed=seed + 1, config=synthetic)
    model = rec_model(spec, cfg.model)
    configs = spec.embedding_bag_configs()
    # Sparse rows see few updates each: Adagrad suits the tables, Adam the dense layers.
    opt_sparse = torch.optim.Adagrad(model.ebc.parameters(), lr=t.sparse_lr)
    opt_dense = torch.optim.Adam(model.dense.parameters(), lr=t.dense_lr)
    batches = [collate(train.slice(i, batch_size), spec) for i in range(0, train.num_rows, batch_size)]
    step, start = 0, time.perf_counter()
    lr_groups = [(opt_sparse.param_groups, t.sparse_lr), (opt_dense.param_groups, t.dense_lr)]
    for epoch in range(t.epochs):
        model.train()
        for b in batches:
            set_learning_rates(lr_groups, lr_factor(t.lr_schedule, step, t.epochs * len(batches)))
            loss = masked_bce_per_task(model(b.sparse_features, b.dense_features), b.labels, b.label_masks).sum()
            opt_sparse.zero_grad()
            opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step()
            opt_dense.step()
            step += 1
            if model.managed is not None:  # rows handed to new ids start afresh, as in the job
                reset_reassigned_rows(model.managed, configs, seed, step, unsharded_tables(model, opt_sparse))
            if step % 50 == 0:
                log(
                    f"epoch {epoch} step {step} loss {loss.item():.4f} "
                    f"{step * batch_size / (time.perf_counter() - start):,.0f} rows/s"
                )
    metrics = TaskMetrics.for_spec(spec)
    model.eval()
    with torch.no_grad():
        for i in range(0, val.num_rows, 4096):
            b = collate(val.slice(i, 4096), spec)
            metrics.update(model(b.sparse_features, b.dense_features), b.labels, b.label_masks, b.groups)
    result = metrics.compute()
    result.update({f"{k}/best_auc": v for k, v in best_achievable_auc(val).items()})
    return result
