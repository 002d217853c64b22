"""Forward+backward throughput of the batched PLE against the loop reference.

Both models hold the same weights and run the same batches, interleaved round by round so
that machine noise hits both alike. Prints rows/s of each and the ratio (target >= 3x).

    .venv/bin/python benchmarks/bench_ple.py [--batch 4096 --rounds 5 ...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_ple import reference_from  # noqa: E402

from ple_model import ModelConfig, MultiTaskModel  # noqa: E402


def step_seconds(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)  # GPU kernels run async
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
    sync()
    return (time.perf_counter() - start) / steps


def measure(cfg: ModelConfig, input_dim: int, batch: int, steps: int, rounds: int,
            device: str = "cpu") -> tuple[float, float]:
    """Median seconds per fwd+bwd step of (batched, reference), rounds interleaved."""
    torch.manual_seed(0)
    fast = MultiTaskModel(cfg, input_dim)
    ref = reference_from(fast).to(device)
    fast = fast.to(device)
    # The real input is an embedding output that needs gradients (the tables train).
    x = torch.randn(batch, input_dim, device=device, requires_grad=True)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)
    for m in (fast, ref):  # warm-up
        step_seconds(m, x, 2)
    fast_t, ref_t = [], []
    for _ in range(rounds):
        fast_t.append(step_seconds(fast, x, steps))
        ref_t.append(step_seconds(ref, x, steps))
    return statistics.median(fast_t), statistics.median(ref_t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args()
    base = ModelConfig(num_tasks=2, num_levels=2, task_experts=2, shared_experts=1, expert_hidden=[64],
                       tower_hidden=[32])
    many = base.model_copy(update=dict(num_tasks=3, num_levels=3, task_experts=4, shared_experts=4))
    cases = [  # (name, config, input dim, batch); the first is the reference point
        ("2 lvl, 2 tasks, 2+1 experts", base, 256, 4096),
        ("2 lvl, 2 tasks, 2+1 experts", base, 256, 256),
        ("3 lvl, 3 tasks, 4+4 experts", many, 256, 4096),
        ("3 lvl, 3 tasks, 4+4 experts", many, 256, 256),
    ]
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"forward+backward, fp32, torch {torch.__version__}, {where}")
    print(f"{'case':30s} {'in':>4s} {'batch':>6s} {'reference rows/s':>17s} {'batched rows/s':>15s} {'ratio':>6s}")
    for name, cfg, input_dim, batch in cases:
        f, r = measure(cfg, input_dim, batch, args.steps, args.rounds, args.device)
        print(f"{name:30s} {input_dim:4d} {batch:6d} {batch / r:17,.0f} {batch / f:15,.0f} {r / f:5.2f}x")
    print("target: ratio >= 3x")


if __name__ == "__main__":
    main()
