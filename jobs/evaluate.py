"""Evaluate exported models on labelled Parquet logs: per task AUC, GAUC (with the feature
spec's group_by), log loss, calibration, rows and positive labels.

    python -m jobs.evaluate --model runs/ple-local/export --input data/synthetic --days 2026-01-03
    python -m jobs.evaluate --model registry/adult@production --model registry/adult@v0004 \\
        --input data/adult --days 2026-01-02 --json out/adult-eval.json

--model: an export directory, or a registry reference (<registry root>@production / @vNNNN),
once per model. With several, every model sees the same rows (each mapped with its own feature
spec), and the last lines give each model's differences from the first. --input is a directory
of Parquet files (every .parquet below it), or with --days the dt=YYYY-MM-DD partitions of a day
range under it; the files need the spec's label columns. Runs in this process with pyarrow (no
Ray), the code the retraining gate evaluates with; --max-rows takes the first rows in file order.
--by-day adds a line per dt=YYYY-MM-DD partition under each model's totals (a model's decay over
a week of logs, a bad day), and takes --max-rows of each day. --slice COLUMN adds a line per value
of any column of the files (a device, a country, a category: at most 100 values), most rows
first. --importance adds each input column's permutation importance (pipeline/score/importance.py):
the AUC lost per task when the column's values are shuffled across the rows of each batch,
largest first. It scores the rows once more per input column: pair it with --max-rows.

Exit status: 0 evaluated; 65 bad data (a missing label column, a value the feature spec does
not allow); 78 a --json that cannot be written; 1 any other error (a model that is not an
export, an --input that is not a directory, --by-day on files outside dt= partitions, a --slice
column of over 100 values) (pipeline/common/errors.py); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os


def _differences(first: dict, other: dict) -> str:
    """`ctr AUC +0.0012, GAUC +0.0008, logloss -0.0010; cvr ...`: `other` minus `first`."""
    from pipeline.train.progress import said

    parts = []
    for task in sorted(k.split("/")[0] for k in first if k.endswith("/auc")):
        keys = [(name, f"{task}/{key}") for name, key in (("AUC", "auc"), ("GAUC", "gauc"), ("logloss", "logloss"))]
        shown = [f"{name} {said(other[k] - first[k], sign=True)}" for name, k in keys if k in first and k in other]
        parts.append(f"{task} " + ", ".join(shown))
    return "; ".join(parts)


def _group_line(name: str, result) -> str:
    """`2026-01-02: 6,000 rows; ctr AUC 0.7412 (GAUC 0.6100), logloss 0.4244; cvr AUC ...`."""
    from pipeline.common.logs import plural
    from pipeline.train.progress import said, said_auc

    m = result.metrics
    tasks = sorted(k.split("/")[0] for k in m if k.endswith("/auc"))
    per_task = [f"{t} AUC {said_auc(m, f'{t}/')}, logloss {said(m[f'{t}/logloss'])}" for t in tasks]
    return f"{name}: {plural(result.rows, 'row')}; " + "; ".join(per_task)


def _importance_lines(importance) -> list[str]:
    """`user_id: ctr +0.0412, cvr +0.0101` per column, the largest summed drop first."""
    from pipeline.train.progress import said

    def total(drops: dict[str, float]) -> float:
        return sum(d for d in drops.values() if not math.isnan(d))

    ranked = sorted(importance.drops.items(), key=lambda item: -total(item[1]))
    return [f"{c}: " + ", ".join(f"{t} {said(d, sign=True)}" for t, d in drops.items()) for c, drops in ranked]


def _files_by_day(files: list[str]) -> dict[str, list[str]]:
    """The files grouped by their dt=YYYY-MM-DD partition, days in order."""
    from pipeline.data.files import file_day
    from pipeline.score.errors import ScoringError

    days: dict[str, list[str]] = {}
    for f in files:
        day = file_day(f)
        if day is None:
            raise ScoringError(f"--by-day: {f} is in no dt=YYYY-MM-DD directory")
        days.setdefault(day, []).append(f)
    return dict(sorted(days.items()))


def _evaluate_model(args: argparse.Namespace, ref: str, path: str, version: str, days: dict[str, list[str]]) -> dict:
    """Evaluate one model on the files of `days` as the arguments ask, print its lines, return
    its JSON entry."""
    from pipeline.common.logs import plural
    from pipeline.score.evaluate import evaluate_days, evaluate_slices
    from pipeline.score.importance import permutation_importance
    from pipeline.train.progress import summary_lines

    files = [f for day_files in days.values() for f in day_files]
    if args.slice:
        result, groups = evaluate_slices(path, files, args.batch_size, args.slice, args.max_rows)
    else:
        result, groups = evaluate_days(path, days, args.batch_size, args.max_rows)
    print(f"model {ref} (version {version}): {plural(result.rows, 'row')} of {plural(len(files), 'file')}")
    for line in summary_lines(result.metrics, counts=True):
        print(f"  {line}")
    entry = {"model": ref, "export": path, "version": version, "rows": result.rows, "metrics": result.metrics}
    if args.by_day or args.slice:
        print(f"  by {'day' if args.by_day else args.slice}:")
        for name, of_group in groups.items():
            print(f"    {_group_line(name, of_group)}")
        entry["days" if args.by_day else "slices"] = {
            n: {"rows": e.rows, "metrics": e.metrics} for n, e in groups.items()
        }
    if args.importance:
        importance = permutation_importance(path, files, args.batch_size, args.max_rows)
        print(f"  importance: AUC lost with the column shuffled in batches of {args.batch_size:,} rows")
        for line in _importance_lines(importance):
            print(f"    {line}")
        entry["importance"] = importance.drops
    return entry


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="export directory, or <registry root>@production / @vNNNN; repeat it to compare models",
    )
    p.add_argument("--input", required=True, help="directory of Parquet files with the label columns")
    p.add_argument("--days", default=None, help="only these dt= partitions: DAY or START..END")
    p.add_argument("--max-rows", type=int, default=None, help="evaluate the first this-many rows (file order)")
    p.add_argument("--by-day", action="store_true", help="also a line per dt= day (--max-rows: of each day)")
    p.add_argument("--slice", metavar="COLUMN", default=None, help="also a line per value of this column")
    p.add_argument("--importance", action="store_true", help="also each input column's permutation importance")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--json", default=None, help="also write the results to this file (JSON)")
    p.add_argument("--verbose", action="store_true", help="show library logs")
    args = p.parse_args(argv)
    if args.max_rows is not None and args.max_rows < 1:
        p.error("--max-rows must be at least 1")
    if args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.by_day and args.slice:
        p.error("--by-day and --slice: one or the other")

    from pipeline.common.errors import exit_on_bad_input
    from pipeline.common.files import make_output_dir, no_nan, write_text_atomic
    from pipeline.common.logs import configure_logs
    from pipeline.data.validation import validate_files
    from pipeline.score.errors import ScoringError
    from pipeline.score.plan import list_input_files, resolve_model
    from pipeline.train.export import ExportError, check_export

    results = []
    with exit_on_bad_input(ExportError, ScoringError):
        configure_logs(None, args.verbose, import_libraries=False)
        if args.json:  # before the work, not after it
            make_output_dir(os.path.dirname(os.path.abspath(args.json)), "--json")
        files = list_input_files(args.input, args.days)
        days = _files_by_day(files) if args.by_day else {"": files}  # before any work
        models = []
        for ref in args.model:  # every model and every file's footer checked before any work
            path, _ = resolve_model(ref)
            spec, meta = check_export(path)
            validate_files(files, spec, labels=True)
            models.append((ref, path, meta["version"]))
        for ref, path, version in models:
            results.append(_evaluate_model(args, ref, path, version, days))
    first = results[0]
    for other in results[1:]:
        print(f"{other['model']} against {first['model']}: {_differences(first['metrics'], other['metrics'])}")
    report = {"input": args.input, "days": args.days, "slice": args.slice, "files": files, "models": results}
    if args.json:
        write_text_atomic(args.json, json.dumps(no_nan(report), indent=2) + "\n")
        print(f"results: {args.json}")
    return report


if __name__ == "__main__":
    main()
