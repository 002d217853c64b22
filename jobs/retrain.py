"""Daily retraining with a model registry: what a scheduler runs once a day.

    python -m jobs.retrain --config configs/jobs/retrain_local.yaml
    python -m jobs.retrain --config configs/jobs/retrain_local.yaml retrain.registry=/mnt/models train.batch_size=2048
    ray job submit --working-dir . -- python -m jobs.retrain --config configs/jobs/retrain_local.yaml

Finds the days that arrived since the production model, trains a candidate warm-started from
production (from scratch on an empty registry), evaluates candidate and production on the
newest day (held out), and promotes the candidate only if it is not worse beyond the
configured tolerances. Only one run at a time per registry (a lock file).

Exit status: 0 promoted, or nothing new to train on; 3 candidate rejected (kept in the registry,
production unchanged); 75 another retrain holds the lock; 65 bad data in the new days; 78 bad
config or feature spec; 130 interrupted; 1 any other error (pipeline/common/errors.py). The
registry is left as it was on every error.
"""

from __future__ import annotations

import argparse
import sys

EXIT_REJECTED = 3


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/jobs/retrain_local.yaml")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else start local)")
    p.add_argument("--verbose", action="store_true", help="show library logs live (always in <run>/logs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. retrain.registry=/mnt/models")
    args = p.parse_args(argv)

    from pipeline.common.errors import exit_on_bad_input, fail
    from pipeline.common.logs import configure_logs, with_verbose
    from pipeline.registry.versions import RegistryError
    from pipeline.retrain.config import load_retrain_config
    from pipeline.retrain.daily import RetrainError, retrain
    from pipeline.train.launch import RunStopped

    try:
        with exit_on_bad_input(
            RegistryError, RetrainError, rerun="the registry holds only whole versions; the next run goes on from it"
        ):
            cfg = load_retrain_config(args.config, with_verbose(args.overrides, args.verbose))
            configure_logs(cfg.job.run_dir / "logs" / "driver.log", cfg.job.verbose)
            outcome = retrain(cfg, args.address)
    except RunStopped as stopped:  # Ctrl-C: the attempt is not resumed, the next run starts it afresh
        fail(f"{stopped}: the registry is unchanged; the next run trains the candidate again")
    if outcome.status == "rejected":
        sys.exit(EXIT_REJECTED)
    return outcome


if __name__ == "__main__":
    main()
