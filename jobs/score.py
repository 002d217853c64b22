"""Score Parquet inputs offline with an exported model, exactly once per input row.

    python -m jobs.score --model runs/ple-local/export --input data/synthetic --output out/scores
    python -m jobs.score --model M --input data/synthetic --days 2026-01-03 --output out/scores
    python -m jobs.score --model M --input D --output O --keys impression_id,user_id num_actors=8
    ray job submit --working-dir . -- python -m jobs.score --model M --input D --output O

--input is a directory of Parquet files (every .parquet below it), or with --days the
dt=YYYY-MM-DD partitions of a day range under it. Output: O/<same relative path>, e.g.
O/dt=2026-01-03/part-00000.parquet, with the key columns, p_<task>, p_ctcvr and model_version;
O/_manifest.json lists completed files. Running the same command again after a failure or a
kill finishes the work without duplicating rows. Joins the Ray cluster in RAY_ADDRESS (set by
`ray job submit`) or --address, else starts a local one. Settings: configs/jobs/score_local.yaml,
overridden by dotted KEY=VALUE arguments (batch_size=16384 gpus_per_actor=1).

Exit status: 0 scored; 65 bad data (the files already scored stay in the manifest, a rerun
goes on from there); 78 bad config or feature spec; 130 interrupted (Ctrl-C: likewise); 1 any other
error (pipeline/common/errors.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", required=True, help="export directory written by training, or <registry root>@production / @vNNNN"
    )
    p.add_argument("--input", required=True, help="directory of Parquet files (dt=YYYY-MM-DD/... kept)")
    p.add_argument("--days", default=None, help="only these dt= partitions: DAY or START..END")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--keys", default=None, help="comma-separated key columns (overrides key_columns)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a result of another model version in --output instead of failing",
    )
    p.add_argument("--config", default="configs/jobs/score_local.yaml")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else start local)")
    p.add_argument("--verbose", action="store_true", help="show library logs live (always in <output>/_logs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. num_actors=4")
    args = p.parse_args(argv)

    from pipeline.common.errors import exit_on_bad_input
    from pipeline.common.logs import configure_logs, with_verbose
    from pipeline.score.config import load_score_config
    from pipeline.score.errors import ScoringError
    from pipeline.score.output import MANIFEST, log_dir
    from pipeline.score.run import score
    from pipeline.train.export import ExportError

    overrides = list(args.overrides)
    if args.keys:
        overrides.append(f"key_columns=[{args.keys}]")
    # Every output file is complete or absent (pipeline/score/run.py): a rerun goes on from the manifest.
    rerun = f"the files scored so far are listed in {Path(args.output) / MANIFEST}; the same command scores the rest"
    with exit_on_bad_input(ExportError, ScoringError, rerun=rerun):
        cfg = load_score_config(args.config, with_verbose(overrides, args.verbose))
        configure_logs(log_dir(args.output) / "driver.log", cfg.verbose)
        summary = score(
            args.model, args.input, args.output, cfg, days=args.days, overwrite=args.overwrite, address=args.address
        )
    print(f"full logs: {log_dir(args.output)}")
    return summary


if __name__ == "__main__":
    main()
