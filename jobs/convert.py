"""Convert a public Ali-CCP or AliExpress CSV, or any delimited table, into
OUT/dt=DAY/part-<csv stem>-NNNNN.parquet.

    python -m jobs.convert ali_ccp --csv ali_ccp_train.csv --out data/ali_ccp --day 2018-01-01
    python -m jobs.convert ali_ccp --csv ali_ccp_val.csv   --out data/ali_ccp --day 2018-01-02
    python -m jobs.convert aliexpress --csv aliexpress_train.csv --out data/aliexpress --day 2018-01-01

The public data has no dates, so --day names the partition; the convention is train, val, test
on consecutive days (see pipeline/data/converters.py). Feature specs: configs/features/<format>.yaml.

`csv` takes the layout from flags (pipeline/data/csv_table.py). UCI Adult (../shared/data/adult),
training rows on 2026-01-01 and the test rows on 2026-01-02:

    ADULT=age,workclass,fnlwgt,education,education_num,marital_status,occupation,relationship,race,sex,capital_gain,capital_loss,hours_per_week,native_country,income
    python -m jobs.convert csv --csv ../shared/data/adult/adult.data --out data/adult --day 2026-01-01 \\
        --columns $ADULT --sep ", " --na "?" --label 'income=income:>50K,>50K./<=50K,<=50K.' \\
        --label never_married=marital_status:Never-married --drop marital_status
    python -m jobs.convert csv --csv ../shared/data/adult/adult.test --out data/adult --day 2026-01-02 \\
        --columns $ADULT --sep ", " --na "?" --label 'income=income:>50K,>50K./<=50K,<=50K.' \\
        --label never_married=marital_status:Never-married --drop marital_status

(add --skip-rows 1 for a copy of adult.test that starts with "|1x3 Cross validator"). --label
NAME=COLUMN:POS,...[/NEG,...] writes NAME = 1 where COLUMN is a POS value, else 0; with NEG
values, a value in neither list fails the file unless --unmapped-labels drop. A label named like
its column replaces it; another source column stays an input unless --drop'ed. The empty value
is always missing; --na adds markers. Types are inferred per file from its first block
(int64, float64, string), kept for the next files of the same call, and pinned with --type COL=TYPE.
"""

import argparse
import dataclasses
from pathlib import Path

from pipeline.common.errors import exit_on_bad_input
from pipeline.common.files import make_output_dir
from pipeline.common.logs import plural
from pipeline.data.converters import LAYOUTS, convert_csv
from pipeline.data.csv_table import TYPES, CsvTableOptions, LabelRule, convert_table
from pipeline.data.files import iso_day

_CSV_FLAGS = ("columns", "sep", "na", "skip_rows", "drop", "label", "unmapped_labels", "type")


def _names(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated flags ("--drop a,b --drop c") as one tuple."""
    return tuple(n.strip() for v in values or () for n in v.split(",") if n.strip())


def _table_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> CsvTableOptions:
    try:
        labels = tuple(LabelRule.parse(t) for t in args.label or ())
        types = {}
        for t in args.type or ():
            column, eq, name = t.partition("=")
            if not eq:
                raise ValueError(f"--type {t!r}: expected COLUMN=TYPE")
            types[column.strip()] = name.strip()
    except ValueError as e:
        p.error(str(e))
    return CsvTableOptions(
        columns=_names([args.columns]) if args.columns else None,
        sep=args.sep,
        na_values=("", *(args.na or ())),
        skip_rows=args.skip_rows,
        drop=_names(args.drop),
        labels=labels,
        unmapped_labels=args.unmapped_labels,
        types=types,
        rows_per_file=args.rows_per_file,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=[*sorted(LAYOUTS), "csv"])
    p.add_argument("--csv", required=True, nargs="+", help="one or more CSV files of that layout")
    p.add_argument("--out", required=True, help="output root directory")
    p.add_argument("--day", required=True, help="partition day, YYYY-MM-DD")
    p.add_argument("--rows-per-file", type=int, default=2_000_000)
    t = p.add_argument_group("csv format only")
    t.add_argument("--columns", help="comma-separated column names (default: the file's header row)")
    t.add_argument("--sep", default=",", help="separator: one character, optionally padded (', ')")
    t.add_argument("--na", action="append", help="a missing-value marker, e.g. '?' (repeatable)")
    t.add_argument("--skip-rows", type=int, default=0, help="leading lines to skip")
    t.add_argument("--drop", action="append", help="columns not written (comma-separated, repeatable)")
    t.add_argument("--label", action="append", help="NAME=COLUMN:POS,...[/NEG,...] (repeatable)")
    t.add_argument("--unmapped-labels", choices=["fail", "drop"], default="fail")
    t.add_argument("--type", action="append", help=f"COLUMN=TYPE, TYPE in {sorted(TYPES)} (repeatable)")
    args = p.parse_args()
    missing = [c for c in args.csv if not Path(c).is_file()]
    if missing:
        p.error(f"--csv: no such file: {', '.join(missing)}")
    try:
        args.day = iso_day(args.day)  # as the converters write it: the summary names that partition
    except ValueError as e:
        p.error(f"--day: {e}")
    with exit_on_bad_input():  # a bad line, value or option: one line naming it, exit 65 (data) or 78
        make_output_dir(args.out, "--out")
        _convert(p, args)


def _convert(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.format != "csv":
        used = [f"--{f.replace('_', '-')}" for f in _CSV_FLAGS if getattr(args, f) != p.get_default(f)]
        if used:
            p.error(f"{', '.join(used)}: for the csv format only")
        for csv in args.csv:
            files = convert_csv(csv, args.out, args.day, LAYOUTS[args.format], rows_per_file=args.rows_per_file)
            rows = plural(sum(f["rows"] for f in files), "row")
            print(f"{csv}: {rows} -> {plural(len(files), 'file')} in {args.out}/dt={args.day}")
        return
    stems = [Path(c).stem for c in args.csv]
    if len(set(stems)) < len(stems):  # part-<stem>-NNNNN: one would overwrite the other
        p.error(f"--csv files with the same name stem {stems} cannot go into one day")
    options = _table_options(p, args)
    for csv in args.csv:
        summary = convert_table(csv, args.out, args.day, options)
        print(summary.line())
        # the next files get this file's types, so that one call writes one schema
        options = dataclasses.replace(options, types={**summary.types, **options.types})


if __name__ == "__main__":
    main()
