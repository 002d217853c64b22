"""Modulo hashing against managed collisions on a catalogue that drifts every day.

    python benchmarks/bench_collisions.py                    # 5 train days + 1 eval day, drift 0.1
    python benchmarks/bench_collisions.py --drift 0.3 --policy lfu
    python benchmarks/bench_collisions.py --rounds 4          # rows/s ratio per round, alternating
    python benchmarks/bench_collisions.py --seeds 0 1 2 3     # AUC differences over training seeds

Generates logs whose users and items change every day (`id_drift`: that share of each
catalogue is replaced daily, new ids as popular as old ones), then trains the demo's model
(configs/jobs/train_local.yaml, 2 CPU workers, the real job) twice on the training days: once
with the user and item tables hashing ids modulo their rows, once with the same rows managed
(TorchRec's MCH modules, `collision: managed`), so both hold the same table memory. Each
run's validation is the next day. Prints per run:
  collision   per table, the share of the evaluation day's impressions whose id shares its row
              with another live id. Hashing: another id of the training days or the evaluation
              day lands in the same row. Managed: the id holds no row in the export's mapping
              (it goes to the table's last row with every other such id).
  AUC, GAUC   per task on the evaluation day
  rows/s      the job's steady training rows/s
and the managed/hash ratios. Targets: collision rate at most 1/5 of hashing's, AUC at least
hashing's, rows/s at least 0.8 of hashing's.

A run repeats exactly, but one training seed (`train.seed`: the initial weights) is one draw: with
several `--seeds`, both are trained once per seed, and the AUC and GAUC differences are printed per
seed with their mean and spread (the first seed's run gives the collision rates).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from pipeline.common.logs import configure_logs  # noqa: E402
from pipeline.data.feature_spec import load_spec  # noqa: E402
from pipeline.data.files import list_day_files  # noqa: E402
from pipeline.data.synthetic import SyntheticConfig, day_names, write_file  # noqa: E402
from pipeline.train.config import load_config  # noqa: E402
from pipeline.train.launch import run_training  # noqa: E402

TABLES = {"user": "user_id", "item": "item_id"}  # the drifting tables and the feature measured


def write_days(root: str, days: int, rows_per_day: int, config: SyntheticConfig) -> list[str]:
    names = day_names("2026-01-01", days)
    for d, day in enumerate(names):
        write_file(
            f"{root}/dt={day}/part-00000.parquet", rows_per_day, seed=0, day_index=d, file_index=0, config=config
        )
    return names


def write_spec(work: str, collision: str, rows: dict[str, int], policy: str, interval: int) -> str:
    data = load_spec(Path(REPO, "configs/features/synthetic.yaml")).model_dump(mode="json", exclude_none=True)
    for t in data["tables"]:
        if t["name"] in rows:
            t.pop("vocab_size", None)
            t.update(hash_buckets=rows[t["name"]], collision=collision)
            if collision == "managed":
                t["eviction"] = {"policy": policy, "interval_steps": interval}
    path = Path(work, f"spec-{collision}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def train(work: str, spec: str, name: str, train_days: list[str], eval_day: str, args, seed: int) -> dict:
    cfg = load_config(
        Path(REPO, "configs/jobs/train_local.yaml"),
        [
            f"data.root={work}/data",
            f"data.spec={spec}",
            f"data.train_days=[{train_days[0]},{train_days[-1]}]",
            f"data.val_days=[{eval_day},{eval_day}]",
            f"output_dir={work}/runs",
            f"name={name}",
            f"train.epochs={args.epochs}",
            f"train.seed={seed}",
            "train.checkpoint_every_steps=null",
            "cluster.max_failures=0",
        ],
    )
    result = run_training(cfg)
    return {**result.metrics, "export": result.export_dir}


def collision_rates(export: str, files: list[str], train_files: list[str]) -> dict[str, float]:
    """{<table>: share of the files' impressions whose id shares a row with another live id,
    <table>/known: the same among impressions of ids the training days had, <table>/new: the
    share of impressions of ids they did not have}."""
    import pyarrow.parquet as pq

    from pipeline.data.collate import collate
    from pipeline.train.export import load_export

    model, spec, _ = load_export(export)
    table = pq.read_table(files, columns=spec.columns())
    ids = collate(table, spec).sparse_features
    out = {}
    for name, feature in TABLES.items():
        column = table.column(feature).to_numpy()
        trained = np.unique(pq.read_table(train_files, columns=[feature]).column(0).to_numpy())
        known = np.isin(column, trained)
        if spec.table_by_name[name].managed:
            rows = model.managed(ids)[feature].values().numpy()
            shared = rows == spec.table_by_name[name].num_embeddings - 1
        else:
            # Hashing: the live ids are every id the model was trained on, and the day's own.
            rows_of_live = collate_rows(spec, feature, np.unique(np.concatenate([trained, column])))
            ids_per_row = np.bincount(rows_of_live, minlength=spec.table_by_name[name].num_embeddings)
            shared = ids_per_row[ids[feature].values().numpy()] > 1
        out.update({name: float(shared.mean()), f"{name}/known": float(shared[known].mean())})
        out[f"{name}/new"] = float(1 - known.mean())
    return out


def collate_rows(spec, feature: str, ids: np.ndarray) -> np.ndarray:
    from pipeline.data.id_mapping import int_ids_to_rows

    t = spec.table_by_name[next(f.table for f in spec.sparse if f.name == feature)]
    return int_ids_to_rows(ids, t.num_embeddings, t.hash_all)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=6, help="days of logs: all but the last train, the last evaluates")
    p.add_argument("--rows-per-day", type=int, default=150_000)
    p.add_argument("--users", type=int, default=4000, help="users of one day's catalogue (items: a quarter)")
    p.add_argument("--drift", type=float, default=0.1, help="share of the catalogue replaced every day")
    p.add_argument("--rows-factor", type=float, default=1.0, help="table rows = this x one day's catalogue")
    p.add_argument("--policy", default="lru", choices=["lru", "lfu"])
    p.add_argument("--interval", type=int, default=100, help="eviction interval, in steps (the spec's default)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="train both again this many times, alternating: rows/s spread")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed of the runs: AUC spread over seeds")
    p.add_argument("--work-dir", default=None)
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-collisions-")
    configure_logs(Path(work, "driver.log"))  # as the jobs: library logs to a file, not the console
    config = SyntheticConfig(num_users=args.users, num_items=args.users // 4, id_drift=args.drift)
    days = write_days(f"{work}/data", args.days, args.rows_per_day, config)
    rows = {"user": round(args.rows_factor * config.num_users), "item": round(args.rows_factor * config.num_items)}
    print(
        f"{os.cpu_count()} CPUs; {args.days - 1} training days + 1 evaluation day of {args.rows_per_day:,} rows; "
        f"catalogue {config.num_users:,} users / {config.num_items:,} items a day, {args.drift:.0%} new every day; "
        f"tables of {rows['user']:,} / {rows['item']:,} rows; managed: {args.policy} every {args.interval} steps"
    )
    eval_files = list_day_files(f"{work}/data", days[-1], days[-1])
    train_files = list_day_files(f"{work}/data", days[0], days[-2])
    specs = {c: write_spec(work, c, rows, args.policy, args.interval) for c in ("hash", "managed")}

    def run(collision: str, name: str, seed: int = args.seeds[0]) -> dict:
        return train(work, specs[collision], name, days[:-1], days[-1], args, seed)

    found = {}
    for collision in specs:
        m = run(collision, collision)
        rates = collision_rates(m["export"], eval_files, train_files)
        found[collision] = {**m, **{f"collision/{t}": r for t, r in rates.items()}}
        tasks = sorted({k.split("/")[1] for k in m if k.startswith("val/") and k.endswith("/auc")})
        quality = ", ".join(f"{t} AUC {m[f'val/{t}/auc']:.4f} GAUC {m[f'val/{t}/gauc']:.4f}" for t in tasks)
        shares = "; ".join(f"{t} {rates[t]:.3f} (known ids {rates[f'{t}/known']:.3f})" for t in TABLES)
        print(f"{collision:8s} collision {shares}; {quality}; {m['train/rows_per_s_steady']:,.0f} rows/s")
    h, mc = found["hash"], found["managed"]
    print(
        "impressions of ids no training day had (no mapping learnt from those days can hold them): "
        + ", ".join(f"{t} {h[f'collision/{t}/new']:.3f}" for t in TABLES)
    )

    def ratio(key: str) -> str:
        return f"{mc[key] / max(h[key], 1e-12):.3f}"

    aucs = [k for k in sorted(h) if k.startswith("val/") and k.endswith("/auc")]
    print(
        "managed / hash: collision "
        + ", ".join(f"{t} {ratio(f'collision/{t}')} (known ids {ratio(f'collision/{t}/known')})" for t in TABLES)
        + " (target <= 0.2); AUC "
        + ", ".join(f"{k.split('/')[1]} {mc[k] - h[k]:+.4f}" for k in aucs)
        + " (target >= 0); rows/s "
        + ratio("train/rows_per_s_steady")
        + " (target >= 0.8)"
    )
    # Rows/s is the noisy figure (+-20 % between runs here): more rounds, alternating, give its spread.
    # The runs repeat exactly (data.preserve_order), so collision and AUC need no second round.
    ratios = [mc["train/rows_per_s_steady"] / h["train/rows_per_s_steady"]]
    for r in range(1, args.rounds):
        steady = {c: run(c, f"{c}-{r}")["train/rows_per_s_steady"] for c in specs}
        ratios.append(steady["managed"] / steady["hash"])
    if args.rounds > 1:
        print(f"managed / hash rows/s per round: {', '.join(f'{x:.3f}' for x in ratios)}")
    if len(args.seeds) > 1:
        print_seed_spread(found, {s: {c: run(c, f"{c}-seed{s}", s) for c in specs} for s in args.seeds[1:]}, args.seeds)


def print_seed_spread(first: dict, later: dict[int, dict], seeds: list[int]) -> None:
    """Per metric, managed minus hash for every seed (the first seed's from `first`), their mean and
    standard deviation; and the rows/s ratio per seed."""
    runs = [first, *later.values()]
    for metric in sorted(k for k in first["hash"] if k.startswith("val/") and k.endswith(("/auc", "/gauc"))):
        diffs = [r["managed"][metric] - r["hash"][metric] for r in runs]
        print(
            f"managed - hash {metric} per seed {seeds}: {', '.join(f'{d:+.4f}' for d in diffs)}; "
            f"mean {statistics.fmean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}"
        )
    steady = [r["managed"]["train/rows_per_s_steady"] / r["hash"]["train/rows_per_s_steady"] for r in runs]
    print(f"managed / hash rows/s per seed: {', '.join(f'{x:.3f}' for x in steady)}")


if __name__ == "__main__":
    main()
