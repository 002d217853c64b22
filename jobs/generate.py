"""Write synthetic impression logs: OUT/dt=YYYY-MM-DD/part-NNNNN.parquet, one Ray task per file.

    python -m jobs.generate --out data/synthetic --rows 10000000 --days 7 --files-per-day 4 --seed 0

Connects to the Ray cluster in RAY_ADDRESS if set, else starts a local one; a small data set
(under pipeline.data.synthetic.RAY_TASKS_MIN_ROWS rows) is written by this process, without Ray.
The matching feature spec is configs/features/synthetic.yaml.
"""

import argparse
import datetime as dt
import time
from pathlib import Path

from pipeline.common.config import ConfigError
from pipeline.common.errors import exit_on_bad_input
from pipeline.common.files import make_output_dir
from pipeline.common.logs import plural
from pipeline.data.files import iso_day
from pipeline.data.synthetic import DEFAULT_START_DAY, SyntheticConfig, generate_dataset, wants_ray_tasks


def _number(kind: type, low: float, high: float | None = None):
    """An argparse type: a `kind` number in [low, high], else a message saying so."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n int' if kind is int else ' number'}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{text}: must be {bounds}")
        return value

    return parse


def _day(text: str) -> str:
    try:
        return iso_day(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check_out(out: str, start_day: str, days: int) -> None:
    """--out can take the days: its folder can be made, and none of the days holds Parquet files
    already (generated rows would replace some of them and sit beside the others)."""
    make_output_dir(out, "--out")
    first = dt.date.fromisoformat(start_day)
    for day in (first + dt.timedelta(days=i) for i in range(days)):
        held = sorted(p.name for p in (Path(out) / f"dt={day}").glob("*.parquet") if not p.name.startswith((".", "_")))
        if held:
            raise ConfigError(
                f"--out {out}: dt={day} holds {plural(len(held), 'Parquet file')} already "
                f"({', '.join(held[:2])}{', ...' if len(held) > 2 else ''}): "
                "the generated ones would replace or join them; generate into an empty folder, or remove those days"
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output root directory")
    p.add_argument("--rows", type=_number(int, 1), required=True, help="total impressions over all days")
    p.add_argument("--days", type=_number(int, 1), default=1)
    p.add_argument("--files-per-day", type=_number(int, 1), default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--start-day",
        type=_day,
        default=DEFAULT_START_DAY,
        help="first dt=YYYY-MM-DD partition (the configs' first day)",
    )
    p.add_argument("--chunk-rows", type=_number(int, 1), default=100_000, help="rows generated at once (bounds memory)")
    p.add_argument("--num-users", type=_number(int, 1), default=SyntheticConfig.num_users)
    p.add_argument("--num-items", type=_number(int, 1), default=SyntheticConfig.num_items)
    p.add_argument(
        "--conflict",
        type=_number(float, 0),
        default=SyntheticConfig.conflict,
        help="clickbait strength: 0 none, 1 default",
    )
    p.add_argument(
        "--id-drift",
        type=_number(float, 0, 1),
        default=SyntheticConfig.id_drift,
        help="share of users and items new every day",
    )
    args = p.parse_args(argv)
    if args.rows < args.days * args.files_per_day:
        p.error(f"--rows {args.rows}: at least one row per file ({args.days} days x {args.files_per_day} files)")
    with exit_on_bad_input():
        _check_out(args.out, args.start_day, args.days)

    use_ray = wants_ray_tasks(args.rows)
    if use_ray:
        from pipeline.common.ray_cluster import connect

        connect()
    start = time.time()
    config = SyntheticConfig(
        num_users=args.num_users, num_items=args.num_items, conflict=args.conflict, id_drift=args.id_drift
    )
    files = generate_dataset(
        args.out,
        args.rows,
        args.days,
        args.files_per_day,
        args.seed,
        start_day=args.start_day,
        config=config,
        chunk_rows=args.chunk_rows,
        ray_tasks=use_ray,
    )
    took = time.time() - start
    print(
        f"wrote {plural(sum(f['rows'] for f in files), 'row')} in {plural(len(files), 'file')} under {args.out} "
        f"in {took:.1f}s ({sum(f['rows'] for f in files) / took:,.0f} rows/s)"
    )
    if use_ray:
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
