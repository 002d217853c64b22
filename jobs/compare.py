"""Multi-task quality report: train PLE, CGC, MMoE, shared-bottom and single-task models on the
same data and seeds at a comparable parameter budget, and write a report (pipeline/report/compare.py,
pipeline/report/writer.py).

    python -m jobs.compare                                    # configs/jobs/compare_local.yaml
    python -m jobs.compare --config configs/X.yaml compare.seeds=[0,1] train.epochs=3 --out reports/X
    ray job submit --working-dir . -- python -m jobs.compare --config configs/X.yaml

    python -m jobs.compare compare.conflict=[0,1,2] compare.variants=[ple,mmoe,shared_bottom]   # conflict sweep
    python -m jobs.compare --config configs/jobs/adult.yaml   # any training config (real logs, its own spec)

Writes <out>/report.md, <out>/results.json and PNG plots; <out> defaults to
<output_dir>/<name>-report. With `compare.conflict: [0, 0.5, 1]` (generated data only) the
comparison runs once per conflict strength, and <out>/report.md plots PLE's gain against it
(pipeline/report/sweep.py); each point's own report is in <out>/conflict-<c>/. Finished runs
are reused when the same comparison is run again (--rerun trains them afresh).
"""

from __future__ import annotations

import argparse
from pathlib import Path

AGAIN = "the same command reuses the seeds that had finished and trains the rest"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/jobs/compare_local.yaml")
    p.add_argument("--out", default=None, help="report directory (default: <output_dir>/<name>-report)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else start local)")
    p.add_argument("--rerun", action="store_true", help="train every run again, even if it finished before")
    p.add_argument("--verbose", action="store_true", help="show library logs live (always in <out>/logs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides: compare.seeds=[0,1], train.epochs=3, ...")
    args = p.parse_args(argv)

    from pipeline.common.errors import exit_on_bad_input, fail
    from pipeline.common.logs import configure_logs, with_verbose
    from pipeline.report.compare import load_compare_config, run_comparison
    from pipeline.report.writer import write_report
    from pipeline.train.launch import RunStopped

    with exit_on_bad_input():
        job, cc = load_compare_config(args.config, with_verbose(args.overrides, args.verbose))
    out = args.out or Path(job.output_dir) / f"{job.name}-report"
    try:
        # Exit 65 bad data, 78 bad config, 130 Ctrl-C outside a training run (pipeline/common/errors.py).
        with exit_on_bad_input(rerun=AGAIN):
            configure_logs(Path(out) / "logs" / "driver.log", job.verbose)  # each run's workers: <run>/logs/
            if cc.conflict is not None:
                from pipeline.report.sweep import run_sweep, write_sweep_report

                path = write_sweep_report(run_sweep(job, cc, args.address, rerun=args.rerun), out)
            else:
                path = write_report(run_comparison(job, cc, args.address, rerun=args.rerun), out)
    except RunStopped as stopped:  # Ctrl-C: a seed's group of runs is not resumed, finished seeds are kept
        fail(f"{stopped}: {AGAIN}")
    print(f"report: {path}\nfull logs: {Path(out) / 'logs'}")
    return path


if __name__ == "__main__":
    main()
