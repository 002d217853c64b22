"""Convert a public Ali-CCP or AliExpress CSV into OUT/dt=DAY/part-<csv stem>-NNNNN.parquet.

    python -m jobs.convert ali_ccp --csv ali_ccp_train.csv --out data/ali_ccp --day 2018-01-01
    python -m jobs.convert ali_ccp --csv ali_ccp_val.csv   --out data/ali_ccp --day 2018-01-02
    python -m jobs.convert aliexpress --csv aliexpress_train.csv --out data/aliexpress --day 2018-01-01

The public data has no dates, so --day names the partition; the convention is train, val, test
on consecutive days (see pipeline/data/converters.py). Feature specs: configs/<format>.yaml.
"""

import argparse

from pipeline.data.converters import LAYOUTS, convert_csv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=sorted(LAYOUTS))
    p.add_argument("--csv", required=True, nargs="+", help="one or more CSV files of that layout")
    p.add_argument("--out", required=True, help="output root directory")
    p.add_argument("--day", required=True, help="partition day, YYYY-MM-DD")
    p.add_argument("--rows-per-file", type=int, default=2_000_000)
    args = p.parse_args()
    for csv in args.csv:
        files = convert_csv(csv, args.out, args.day, LAYOUTS[args.format], rows_per_file=args.rows_per_file)
        print(f"{csv}: {sum(f['rows'] for f in files)} rows -> {len(files)} files in {args.out}/dt={args.day}")


if __name__ == "__main__":
    main()
