"""Single-process training on in-memory generated data: the embedded default of `jobs.train`
until the distributed Ray Train path exists, and the smallest end-to-end check of the model,
the collate, the masked losses and the metrics working together."""
from __future__ import annotations

import time

import torch

from pipeline.collate import collate
from pipeline.feature_spec import FeatureSpec
from pipeline.losses import masked_bce_per_task
from pipeline.metrics import TaskMetrics
from pipeline.synthetic import best_achievable_auc, generate_table
from ple_model import ModelConfig, RecModel


def train_in_memory(spec: FeatureSpec, model_cfg: ModelConfig, rows: int = 200_000, epochs: int = 2,
                    batch_size: int = 1024, lr: float = 2e-3, seed: int = 0, log=print) -> dict[str, float]:
    torch.manual_seed(seed)
    train, val = generate_table(rows, seed=seed), generate_table(max(rows // 4, 1000), seed=seed + 1)
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, model_cfg)
    # Sparse rows see few updates each: Adagrad suits the tables, Adam the dense layers.
    opt_sparse = torch.optim.Adagrad(model.ebc.parameters(), lr=0.05)
    opt_dense = torch.optim.Adam(model.dense.parameters(), lr=lr)
    batches = [collate(train.slice(i, batch_size), spec) for i in range(0, train.num_rows, batch_size)]
    step, start = 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for b in batches:
            loss = masked_bce_per_task(model(b.sparse_features, b.dense_features), b.labels, b.label_masks).sum()
            opt_sparse.zero_grad(); opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step(); opt_dense.step()
            step += 1
            if step % 50 == 0:
                log(f"epoch {epoch} step {step} loss {loss.item():.4f} "
                    f"{step * batch_size / (time.perf_counter() - start):,.0f} rows/s")
    metrics = TaskMetrics(spec.task_names)
    model.eval()
    with torch.no_grad():
        for i in range(0, val.num_rows, 4096):
            b = collate(val.slice(i, 4096), spec)
            metrics.update(model(b.sparse_features, b.dense_features), b.labels, b.label_masks)
    result = metrics.compute()
    result.update({f"{k}/best_auc": v for k, v in best_achievable_auc(val).items()})
    return result
