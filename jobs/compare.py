"""Multi-task quality report: train PLE, CGC, MMoE, shared-bottom and single-task models on the
same data and seeds at a comparable parameter budget, and write a report (pipeline/report/compare.py,
pipeline/report/writer.py).

    python -m jobs.compare                                    # configs/jobs/compare_local.yaml
    python -m jobs.compare --config configs/X.yaml compare.seeds=[0,1] train.epochs=3 --out reports/X
    ray job submit --working-dir . -- python -m jobs.compare --config configs/X.yaml

Writes <out>/report.md, <out>/results.json and PNG plots; <out> defaults to
<output_dir>/<name>-report. Finished runs are reused when the same comparison is run again
(--rerun trains them afresh).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/jobs/compare_local.yaml")
    p.add_argument("--out", default=None, help="report directory (default: <output_dir>/<name>-report)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else start local)")
    p.add_argument("--rerun", action="store_true", help="train every run again, even if it finished before")
    p.add_argument("overrides", nargs="*", help="dotted overrides: compare.seeds=[0,1], train.epochs=3, ...")
    args = p.parse_args(argv)

    from pipeline.common.config import ConfigError
    from pipeline.report.compare import load_compare_config, run_comparison
    from pipeline.report.writer import write_report

    try:
        job, cc = load_compare_config(args.config, args.overrides)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    comp = run_comparison(job, cc, args.address, rerun=args.rerun)
    path = write_report(comp, args.out or Path(job.output_dir) / f"{job.name}-report")
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    main()
