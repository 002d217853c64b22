"""Train the multi-task model.

    python -m jobs.train [--config configs/synthetic.yaml] [--rows N] [--epochs E]

With no arguments it generates data in memory and trains in this process (the embedded
default). The distributed Ray Train job replaces this path in a later issue.
"""
from __future__ import annotations

import argparse

from pipeline.feature_spec import load_spec
from pipeline.local_train import train_in_memory
from ple_model import ModelConfig


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="configs/synthetic.yaml", help="feature spec of the generated data")
    p.add_argument("--architecture", default="ple", choices=["ple", "cgc", "mmoe", "shared_bottom"])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    result = train_in_memory(load_spec(args.spec), ModelConfig(architecture=args.architecture), rows=args.rows,
                             epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    for task in ("ctr", "cvr"):
        print(f"{task}: AUC {result[f'{task}/auc']:.4f} (best achievable {result[f'{task}/best_auc']:.4f}), "
              f"logloss {result[f'{task}/logloss']:.4f}, calibration {result[f'{task}/calibration']:.3f}")
    return result


if __name__ == "__main__":
    main()
