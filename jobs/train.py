"""Train the multi-task model on Ray (Ray Data -> sharded TorchRec tables -> PLE, Ray Train).

python -m jobs.train                                  # embedded default: configs/jobs/train_local.yaml,
                                                      # local Ray cluster, generated data
python -m jobs.train --config configs/X.yaml train.batch_size=2048 cluster.num_workers=8
ray job submit --working-dir . -- python -m jobs.train --config configs/X.yaml
python -m jobs.train --in-memory                      # one process, no Ray (quick smoke run)

Exit status: 0 trained and exported; 65 bad data (a value the feature spec does not allow);
78 bad config or feature spec; 1 any other error (pipeline/common/errors.py), a run stopped by
Ctrl-C included: its last line names the checkpoint that the same command resumes from (130 for
a Ctrl-C before the run starts).
"""

from __future__ import annotations

import argparse


def _print_metrics(metrics: dict) -> None:
    from pipeline.train.progress import summary_lines

    for line in summary_lines(metrics):
        print(line)
    from pipeline.data.validation import describe_filled, filled_from_metrics

    filled = filled_from_metrics(metrics)
    if filled:
        print(f"missing values filled (training rows, every epoch): {describe_filled(filled)}")
    from pipeline.train.id_turnover import describe_turnover, turnover_from_metrics

    turnover = turnover_from_metrics(metrics)
    if turnover:
        print(f"managed ids: {describe_turnover(turnover)}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/jobs/train_local.yaml")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else start local)")
    p.add_argument("--in-memory", action="store_true", help="train in this process on in-memory generated data")
    p.add_argument("--verbose", action="store_true", help="show library logs live (always in <run>/logs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    args = p.parse_args(argv)

    from pipeline.common.errors import exit_on_bad_input
    from pipeline.common.logs import configure_logs, with_verbose
    from pipeline.train.config import load_config

    with exit_on_bad_input():
        cfg = load_config(args.config, with_verbose(args.overrides, args.verbose))
        logs = cfg.run_dir / "logs"  # the driver's and every worker's full log
        configure_logs(None if args.in_memory else logs / "driver.log", cfg.verbose)
    if args.in_memory:
        from pipeline.data.feature_spec import load_spec
        from pipeline.train.in_memory import train_in_memory

        metrics = train_in_memory(cfg, load_spec(cfg.data.spec))
        _print_metrics(metrics)
        return metrics

    from pipeline.common.errors import fail
    from pipeline.train.launch import RunStopped, run_training

    try:
        # A bad row stops the run at once: exit 65; Ctrl-C before Ray Train runs: 130 (pipeline/common/errors.py).
        with exit_on_bad_input(rerun="the same command starts the run, or resumes it from its latest checkpoint"):
            result = run_training(cfg, args.address)
    except RunStopped as stopped:
        again = "the same command resumes from it" if stopped.checkpoint else "the same command starts it again"
        fail(f"{stopped}: {again}")
    _print_metrics(result.metrics)
    print(f"checkpoint: {result.checkpoint_dir}\nexported model: {result.export_dir}\nfull logs: {logs}")
    return result.metrics


if __name__ == "__main__":
    main()
