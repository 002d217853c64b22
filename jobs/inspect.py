"""Propose a feature spec (YAML) from the Parquet data itself: one streaming pass, flat memory.

    python -m jobs.inspect --data data/synthetic --days 2026-01-01..2026-01-07 \\
        --labels click,conversion --task ctr=click --task cvr=conversion@click \\
        --exclude impression_id,true_p_click,true_p_conv --group-by user_id --out spec.yaml

Ints and strings become embedded ids (a table each, sized from the distinct count), lists of
them multi-valued ids, floats bucketized numbers (--numeric-encoding), keys and constants are
left out; a comment above each choice in the file says why (pipeline/data/inspect.py). Review
the file before training with it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from pipeline.common.config import ConfigError
from pipeline.common.errors import EXIT_BAD_CONFIG, exit_on_bad_input, fail
from pipeline.common.files import make_output_dir, write_text_atomic
from pipeline.common.logs import plural
from pipeline.data.files import parse_days
from pipeline.data.inspect import inspect_days, parse_task
from pipeline.data.spec_choice import NUMERIC_ENCODINGS


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="root of the dt=YYYY-MM-DD/*.parquet partitions")
    p.add_argument("--days", required=True, help="START..END (inclusive) or one day")
    p.add_argument("--labels", required=True, type=_names, help="label columns, comma separated (0/1)")
    p.add_argument(
        "--task",
        action="append",
        default=[],
        type=parse_task,
        help="NAME=LABEL[@SAMPLE_SPACE], repeatable (default: one task per label, on all rows)",
    )
    p.add_argument("--exclude", type=_names, default=[], help="columns that are not features")
    p.add_argument("--group-by", help="column whose groups validation's GAUC is over (e.g. user_id)")
    p.add_argument("--numeric", type=_names, default=[], help="int columns to treat as numbers")
    p.add_argument("--categorical", type=_names, default=[], help="int/string columns kept as ids even if keys")
    p.add_argument("--numeric-encoding", choices=NUMERIC_ENCODINGS, default="bucketize")
    p.add_argument("--buckets", type=int, default=32, help="quantile buckets per numeric column")
    p.add_argument("--name", help="the spec's name (default: the data directory's name)")
    p.add_argument("--out", required=True, help="the spec file to write")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)

    try:
        start, end = parse_days(args.days)
    except ValueError as e:
        p.error(str(e))
    name = args.name or os.path.basename(os.path.normpath(args.data)) or "inspected"
    out = os.path.abspath(args.out)
    _check_writable(out)  # before the pass over the data, which may be long
    with exit_on_bad_input():  # a file, column or label that cannot be used: one line, exit 65
        result = inspect_days(
            args.data,
            start,
            end,
            args.labels,
            tasks=args.task or None,
            exclude=args.exclude,
            group_by=args.group_by,
            numeric=args.numeric,
            categorical=args.categorical,
            numeric_encoding=args.numeric_encoding,
            buckets=args.buckets,
            name=name,
            command="python -m jobs.inspect " + shlex.join(argv),
        )
    try:
        write_text_atomic(out, result.text)
    except OSError as err:
        fail(f"--out {out}: cannot write the spec ({err.strerror or err})", EXIT_BAD_CONFIG)

    print(f"{plural(len(result.files), 'file')}, {plural(result.rows, 'row')} (days {start}..{end})")
    width = max(len(c.column) for c in result.choices)
    for c in result.choices:
        what = c.role
        if c.table is not None:
            size = c.table.get("vocab_size") or c.table.get("hash_buckets")
            kind = "vocab_size" if "vocab_size" in c.table else "hash_buckets"
            what = f"sparse {c.feature['type'] if c.feature else ''}, {kind} {size}, dim {c.table['dim']}"
        elif c.role == "dense" and c.feature is not None:
            what = f"dense {c.feature['transform']}"
        print(f"  {c.column:<{width}}  {what}: {c.why}")
    print(f"wrote {out}")


def _check_writable(out: str) -> None:
    """--out names a file this job can create (its folder made if missing), or exit 78."""
    with exit_on_bad_input():
        if os.path.isdir(out):
            raise ConfigError(f"--out {out} is a directory: name the spec file to write (e.g. {out}/spec.yaml)")
        make_output_dir(os.path.dirname(out), "--out's folder")


if __name__ == "__main__":
    main()
