"""What a managed-collision table costs a training step, side by side with hashing.

    python benchmarks/bench_managed_step.py             # 4 rounds, ~2 min on 2 cores
    python benchmarks/bench_managed_step.py --rounds 8

Trains the demo's model on 2 gloo ranks (no Ray, no data loading: pre-collated batches of
generated rows) with configs/features/synthetic.yaml (hashed user and item tables) and
synthetic_managed.yaml (the same rows, managed: each rank holds its ids back and all-gathers
them at the steps that evict), the same gathering at every step (ple_model/managed_ids.py's
MAX_HELD_STEPS set to 1, as the module did before it held ids back), and a last case with the
all-gather of the managed ids replaced by each rank's own ids (its mappings would drift apart: a
measurement only). The cases alternate within each round. Prints ms per step per case and round,
and per round hashed/managed, the rows/s ratio that bench_collisions.py reports for the real
job; then the ManagedIds forward alone (remap and profile, one process, one rank's batch).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))  # helpers.dist_utils

from helpers.dist_utils import run_on_ranks  # noqa: E402
from pipeline.data.collate import collate  # noqa: E402
from pipeline.data.feature_spec import load_spec  # noqa: E402
from pipeline.data.synthetic import generate_table  # noqa: E402
from pipeline.train.config import load_config  # noqa: E402

BATCH, WARMUP, STEPS = 1024, 10, 200  # the timed steps span 2 eviction intervals of the spec (100)
SPECS = {
    "hashed": "synthetic.yaml",
    "managed": "synthetic_managed.yaml",
    "managed, gather each step": "synthetic_managed.yaml",
    "managed, no gather": "synthetic_managed.yaml",
}


def _batches(spec, rank: int, world: int) -> list:
    table = generate_table(BATCH * (WARMUP + STEPS) * world, seed=0)
    return [collate(table.slice((i * world + rank) * BATCH, BATCH), spec) for i in range(WARMUP + STEPS)]


def _rank(rank: int, world: int, case: str) -> float:
    """ms per training step on this rank (run_on_ranks has set up gloo and one torch thread)."""
    import ple_model.managed_ids
    from pipeline.train.sharded_model import build_sharded_model

    if case == "managed, gather each step":
        ple_model.managed_ids.MAX_HELD_STEPS = 1
    if case == "managed, no gather":
        ple_model.managed_ids._all_gather_ids = lambda ids, capacity: (ids, capacity)
    cfg = load_config(os.path.join(REPO, "configs/jobs/train_local.yaml"), [f"train.batch_size={BATCH}"])
    spec = load_spec(os.path.join(REPO, "configs/features", SPECS[case]))
    sm = build_sharded_model(spec, cfg.model, cfg.train, torch.device("cpu"))
    for i, batch in enumerate(_batches(spec, rank, world)):
        if i == WARMUP:
            dist.barrier()
            start = time.perf_counter()
        loss, _ = sm.model(batch)
        loss.backward()
        sm.optimizer.step()
        sm.optimizer.zero_grad()
    dist.barrier()
    return (time.perf_counter() - start) / STEPS * 1000


def step_ms(case: str, world: int = 2) -> float:
    """ms per training step of `case` on `world` gloo ranks, in fresh processes (the slowest rank)."""
    return max(run_on_ranks(_rank, world, case))


def managed_forward_ms() -> float:
    """ms per ManagedIds forward (train mode: remap, profile, evictions) on one rank's batches."""
    from pipeline.train.module import rec_model

    torch.set_num_threads(1)
    spec = load_spec(os.path.join(REPO, "configs/features/synthetic_managed.yaml"))
    model = rec_model(spec, load_config(os.path.join(REPO, "configs/jobs/train_local.yaml"), []).model).train()
    managed = model.managed
    assert managed is not None, "the managed spec has managed tables"
    batches = _batches(spec, 0, 1)
    for batch in batches[:WARMUP]:
        managed(batch.sparse_features)
    start = time.perf_counter()
    for batch in batches[WARMUP:]:
        managed(batch.sparse_features)
    return (time.perf_counter() - start) / STEPS * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    results: dict[str, list[float]] = {case: [] for case in SPECS}
    for r in range(args.rounds):
        for case in SPECS:
            results[case].append(step_ms(case))
        print(f"round {r}: " + ", ".join(f"{c} {v[-1]:.1f} ms" for c, v in results.items()), flush=True)
    for case, ms in results.items():
        ratios = [h / m for h, m in zip(results["hashed"], ms, strict=True)]
        per_round = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"{case:26s} ms/step {min(ms):.1f}-{max(ms):.1f}   hashed/this per round {per_round}")
    print(f"ManagedIds forward alone, one process, {BATCH} rows: {managed_forward_ms():.2f} ms a step")


if __name__ == "__main__":
    main()
