"""What a new Ray process of a training run spends on its imports, with Python's garbage-collection
thresholds and with the ones the project sets (pipeline/common/ray_cluster.py GC_THRESHOLDS),
side by side in fresh interpreters.

    python benchmarks/bench_worker_imports.py            # 4 rounds, alternating

Each run is a new interpreter that imports Ray, then (timed, in CPU seconds) what a training
worker imports on top: Ray Train, torch, torchrec, torchmetrics and Ray Data. That is where the
embedded cluster's worker setup hook raises the thresholds (Ray runs it after importing itself,
before the task's or actor's own imports). Prints per round both CPU times and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import sys, time
import ray
if sys.argv[1] == "project":
    from pipeline.common.ray_cluster import collect_less_often
    collect_less_often()
began = time.process_time()
import ray.train, ray.data, torch, torchrec, torchmetrics
print(time.process_time() - began)
"""


def import_cpu_s(thresholds: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, thresholds], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return float(out.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    ratios = []
    for r in range(args.rounds):
        python, project = import_cpu_s("python"), import_cpu_s("project")
        ratios.append(project / python)
        print(f"round {r + 1}: Python's thresholds {python:.2f} CPU-s, the project's {project:.2f}: {ratios[-1]:.2f}")
    spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    print(f"project / Python import CPU: median {statistics.median(ratios):.2f} ({spread})")


if __name__ == "__main__":
    main()
