"""UCI Adult end to end with the project's own commands, next to a gradient-boosted tree on the
same rows: the real-data quality target (../shared/data/adult/README.md).

    python benchmarks/bench_adult.py                 # seeds 0 1 2
    python benchmarks/bench_adult.py --seeds 0 --work /tmp/adult
    python benchmarks/bench_adult.py --inspect-args "--numeric-encoding standard"   # an ablation

In one run:
  1. `python -m jobs.convert csv` turns adult.data into day 2026-01-01 and adult.test into
     2026-01-02 (labels income = `>50K`, never_married = `Never-married`, `?` as missing).
  2. `python -m jobs.inspect` proposes the feature spec from the training day.
  3. The training job (configs/jobs/adult.yaml, data.root and data.spec pointed at this run's
     files), one run per seed, trained one after the other in one Ray Train group.
  4. Each run's export scored on every test row in this process; AUC by sklearn's roc_auc_score.
  5. The README's baseline: HistGradientBoostingClassifier(max_iter=300,
     categorical_features="from_dtype") per task, random_state = seed, on the same Parquet rows.
Prints per task the PLE's and the tree's AUC per seed, their means and spreads, PLE minus tree,
and the training rows/s.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
COLUMNS = (
    "age,workclass,fnlwgt,education,education_num,marital_status,occupation,relationship,race,sex,"
    "capital_gain,capital_loss,hours_per_week,native_country,income"
)
NUMERIC = "age,fnlwgt,education_num,capital_gain,capital_loss,hours_per_week"
LABELS = ["income", "never_married"]
TRAIN_DAY, TEST_DAY = "2026-01-01", "2026-01-02"


def convert_command(csv: Path, out: Path, day: str) -> list[str]:
    return [
        *("python", "-m", "jobs.convert", "csv", "--csv", str(csv), "--out", str(out), "--day", day),
        *("--columns", COLUMNS, "--sep", ", ", "--na", "?"),
        *("--label", "income=income:>50K,>50K./<=50K,<=50K.", "--label", "never_married=marital_status:Never-married"),
        *("--drop", "marital_status"),
    ]


def inspect_command(data: Path, spec: Path, extra: list[str]) -> list[str]:
    return [
        *("python", "-m", "jobs.inspect", "--data", str(data), "--days", f"{TRAIN_DAY}..{TRAIN_DAY}"),
        *("--labels", ",".join(LABELS), "--numeric", NUMERIC, "--out", str(spec), *extra),
    ]


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(f"'{c}'" if (" " in c or ">" in c) else c for c in cmd), flush=True)
    subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def ple_aucs(export_dir: str, test_files: list[str]) -> dict[str, float]:
    """Exact AUC of an export on every test row (the workers' validation split drops up to
    world_size - 1 rows to give every worker as many, and bins AUC at 1e-3)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from pipeline.data.reader import iter_file_batches
    from pipeline.train.export import load_export

    model, spec, _ = load_export(export_dir)
    probs, labels = [], []
    with torch.no_grad():
        for b in iter_file_batches(test_files, spec, 8192):
            probs.append(torch.sigmoid(model(b.sparse_features, b.dense_features)).numpy())
            labels.append(b.labels.numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    return {t: float(roc_auc_score(y[:, j], p[:, j])) for j, t in enumerate(spec.task_names)}


def tree_aucs(data: Path, seed: int) -> dict[str, float]:
    """The README's baseline on the converted rows: categories as pandas categories."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    train, test = (pq.read_table(data / f"dt={d}").to_pandas() for d in (TRAIN_DAY, TEST_DAY))
    inputs = [c for c in train.columns if c not in LABELS]
    for c in inputs:
        if not pd.api.types.is_numeric_dtype(train[c]):
            categories = sorted(set(train[c].dropna()) | set(test[c].dropna()))
            train[c] = train[c].astype("category").cat.set_categories(categories)
            test[c] = test[c].astype("category").cat.set_categories(categories)
    out = {}
    for label in LABELS:
        gbdt = HistGradientBoostingClassifier(max_iter=300, categorical_features="from_dtype", random_state=seed)
        gbdt.fit(train[inputs], train[label])
        out[label] = float(roc_auc_score(test[label], gbdt.predict_proba(test[inputs])[:, 1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adult", default=str(REPO.parent / "shared" / "data" / "adult"), help="adult.data/.test")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default=None, help="where the data, spec and runs go (default: a temp dir)")
    p.add_argument(
        "--inspect-args",
        default="",
        help="more jobs.inspect flags, e.g. '--numeric-encoding standard' (what each encoding is worth)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides of configs/jobs/adult.yaml, e.g. train.epochs=6")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-adult-"))
    data, spec = work / "data", work / "adult.yaml"
    run(convert_command(Path(args.adult) / "adult.data", data, TRAIN_DAY))
    run(convert_command(Path(args.adult) / "adult.test", data, TEST_DAY))
    run(inspect_command(data, spec, shlex.split(args.inspect_args)))

    from pipeline.data.files import list_day_files
    from pipeline.train.config import load_config
    from pipeline.train.launch import run_training_group

    overrides = [f"data.root={data}", f"data.spec={spec}", f"output_dir={work}/runs", *args.overrides]
    cfgs = [
        load_config(REPO / "configs" / "jobs" / "adult.yaml", [*overrides, f"train.seed={s}", f"name=adult-seed{s}"])
        for s in args.seeds
    ]
    results = run_training_group(cfgs, "bench-adult")
    test_files = list_day_files(str(data), TEST_DAY, TEST_DAY)
    ple = [ple_aucs(r.export_dir, test_files) for r in results]
    tree = [tree_aucs(data, s) for s in args.seeds]

    print(f"\nUCI Adult, test rows of {TEST_DAY}; seeds {args.seeds}; work dir {work}")
    print(f"{'task':<14} {'PLE AUC (per seed)':<28} {'tree AUC (per seed)':<28} {'PLE - tree':>16}")
    for task in LABELS:
        a, b = [r[task] for r in ple], [r[task] for r in tree]
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        spread = f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else ""
        print(
            f"{task:<14} {_seeds(a):<28} {_seeds(b):<28} {statistics.fmean(diffs):>+8.4f}{spread}"
            f"   (PLE {statistics.fmean(a):.4f}, tree {statistics.fmean(b):.4f})"
        )
    steady = [r.metrics["train/rows_per_s_steady"] for r in results]
    print(f"training: {statistics.fmean(steady):,.0f} rows/s steady ({cfgs[0].cluster.num_workers} workers)")


def _seeds(xs: list[float]) -> str:
    return " ".join(f"{x:.4f}" for x in xs)


if __name__ == "__main__":
    main()
