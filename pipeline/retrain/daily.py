"""The daily retrain: take the lock, find the days that arrived since the production model,
train a candidate (warm-started from production, or from scratch on an empty registry),
evaluate candidate and production on the same held-out day, and promote the candidate only
if it passes the gate (pipeline/retrain/gate.py). Rejected candidates are kept, marked with the reason.

Days. A day is a dt=YYYY-MM-DD partition of `data.root` (with `retrain.ready_marker`, only once
the marker file exists). The newest day is always held out: it is the gate's evaluation day,
and the candidate trains on the days before it. Production recorded the days it trained on and
the day it was evaluated on; a run has work only if a day newer than that evaluation day has
arrived. It then trains on every day after production's last training day up to, not
including, the newest; so the day held out yesterday is trained on today, and no day is
skipped:

    first run (empty registry), days 1..n:  train 1..n-1, hold out n     (needs n >= 2)
    production trained ..k, held out k+1:   train k+1..m-1, hold out m   (when m > k+1)

After a rejection production keeps its days, so the next candidate trains on the rejected
candidate's days as well (plus the new ones). A persistently bad day stops promotions until an
operator deals with it (fix the partition, or roll back with `python -m jobs.registry promote`).
The training days must be contiguous: a missing partition in the range fails the run.

Failure safety: the registry only changes through Registry.publish (rename of a fully written
version, then the pointer switch) and Registry.recover; a run that fails or is killed anywhere
before leaves it as it was, and the next run removes what the killed one left (staged version,
its Ray Train attempt directory, the stale lock).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.common.config import ConfigError
from pipeline.data.files import DAY_DIR
from pipeline.data.validation import describe_filled, filled_from_metrics
from pipeline.registry.versions import CHECKPOINT, CONFIG, EXPORT, SPEC, Registry, Version, code_version, now_iso
from pipeline.retrain.config import RetrainConfig
from pipeline.train.config import JobConfig
from pipeline.train.id_turnover import describe_turnover, turnover_from_metrics

# Test hook: PLE_RETRAIN_PAUSE_AT=<point>:<marker file> makes the run create the marker file at
# that point and wait until it is deleted (a test kills the process meanwhile, or deletes the
# marker to let it continue). Points: "locked" (lock just acquired), "promote" (the candidate is
# fully staged and decided, nothing committed yet).
PAUSE_ENV = "PLE_RETRAIN_PAUSE_AT"


class RetrainError(RuntimeError):
    pass


@dataclass
class DayPlan:
    train_days: list[str]
    eval_day: str


@dataclass
class RetrainOutcome:
    status: str  # "no_new_days" | "promoted" | "rejected"
    message: str
    version: str | None = None
    record: dict | None = None


def pause_point(point: str, log: Callable[[str], None] = print) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec or spec.partition(":")[0] != point:
        return
    marker = spec.partition(":")[2]
    Path(marker).write_text(str(os.getpid()))
    log(f"[retrain] paused at '{point}' until {marker} is deleted ({PAUSE_ENV})")
    while os.path.exists(marker):
        time.sleep(0.1)


# -- days ----------------------------------------------------------------------------------------
def available_days(root: str, ready_marker: str | None = None) -> list[str]:
    """Sorted days under `root` that have Parquet files (and the ready marker, if set). A root
    that is not there is an error, not "no days": a scheduled run would otherwise succeed every
    day on a mistyped or unmounted path."""
    if not os.path.isdir(root):
        raise ConfigError(f"data.root {root}: no such directory (the days' dt=YYYY-MM-DD partitions are read there)")
    days = []
    for name in os.listdir(root):
        m = DAY_DIR.match(name)
        path = os.path.join(root, name)
        if not m or not os.path.isdir(path):
            continue
        # Hidden/underscore files are writers' temporaries (pipeline/data/files.py ignores them too).
        if not any(n.endswith(".parquet") and n[0] not in "._" for n in os.listdir(path)):
            continue
        if ready_marker and not os.path.exists(os.path.join(path, ready_marker)):
            continue
        days.append(m.group(1))
    return sorted(days)


def plan_days(
    days: list[str], production: Version | None, max_train_days: int | None = None
) -> tuple[DayPlan | None, str]:
    """(plan, description), or (None, why there is nothing to do)."""
    if production is None:
        if len(days) < 2:
            return None, (
                f"no production model yet and {len(days)} day(s) of logs: a first model needs "
                f"two (at least one to train on, the newest held out)"
            )
        train, eval_day = days[:-1], days[-1]
    else:
        trained_through, seen = production.record["train_days"][1], production.record["eval_day"]
        if not days or days[-1] <= seen:
            return None, (
                f"no new days since {seen} (production {production.id} trained through "
                f"{trained_through}, evaluated on {seen})"
            )
        train, eval_day = [d for d in days if trained_through < d < days[-1]], days[-1]
    if max_train_days is not None:
        train = train[-max_train_days:]
    if not train:
        return None, f"no days to train on before the held-out day {eval_day}"
    from pipeline.data.files import day_range

    missing = sorted(set(day_range(train[0], train[-1])) - set(train))
    if missing:
        raise RetrainError(
            f"training days {train[0]}..{train[-1]} are not contiguous: {missing} missing "
            f"or not ready; fix the partitions (a gap would silently drop a day)"
        )
    return DayPlan(train, eval_day), f"train on {train[0]}..{train[-1]}, hold out {eval_day}"


# -- the run -------------------------------------------------------------------------------------
def _attempt_pattern(job: JobConfig) -> re.Pattern:
    return re.compile(rf"^{re.escape(job.name)}-v\d{{4,}}-\d{{8}}T\d{{6}}-\d+$")


def remove_old_attempts(job: JobConfig, log: Callable[[str], None] = print) -> None:
    """Ray Train run directories of earlier attempts (killed ones included). Under the lock, no
    attempt is running; a leftover must never be resumed by accident."""
    out = job.output_dir
    if not os.path.isdir(out):
        return
    pattern = _attempt_pattern(job)
    for name in os.listdir(out):
        if pattern.match(name):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            log(f"[retrain] removed the attempt directory {os.path.join(out, name)} of an earlier run")


def _run_config(job: JobConfig, plan: DayPlan, name: str, warm_start: str | None) -> JobConfig:
    data = job.data.model_copy(
        update={
            "train_days": (plan.train_days[0], plan.train_days[-1]),
            "val_days": (plan.eval_day, plan.eval_day),
            "generate": None,
        }
    )
    train = job.train.model_copy(update={"init_from": warm_start})
    # Round-trip through validation: the copy is checked like a config file would be.
    return JobConfig.model_validate(
        {
            **job.model_dump(mode="json"),
            "name": name,
            "data": data.model_dump(mode="json"),
            "train": train.model_dump(mode="json"),
        }
    )


def _train_candidate(run_cfg: JobConfig, address: str | None, production: Version | None):
    """run_training; a warm start that production's settings refuse (the config's feature spec
    or model changed since) says what retraining can do instead."""
    from pipeline.train.checkpoint import CheckpointMismatchError, listed
    from pipeline.train.launch import run_training

    try:
        return run_training(run_cfg, address)
    except CheckpointMismatchError as err:
        if production is None or not err.changed:
            raise
        raise ConfigError(
            f"production {production.id} was trained with other settings than this config's "
            f"({listed(err.changed)}); retraining warm-starts "
            f"from it, so these cannot change. To train them, give retraining a new registry "
            f"(retrain.registry=...): its first run trains from scratch"
        ) from None


def _annotate_export(export_dir: str, reg: Registry, vid: str) -> None:
    """Point the export's metadata at the registry's copy of its checkpoint (the attempt's own
    is deleted) and name its registry version. Metadata only: the content `version` hash
    covers weights, model config and spec, so it is unchanged."""
    from pipeline.train.export import META

    path = os.path.join(export_dir, META)
    with open(path) as f:
        meta = json.load(f)
    meta.update(checkpoint=reg.store.join("versions", vid, CHECKPOINT), registry={"root": reg.root, "version": vid})
    with open(path, "w") as f:
        f.write(json.dumps(meta, indent=2, sort_keys=True))


def retrain(
    cfg: RetrainConfig, address: str | None = None, log: Callable[[str], None] = lambda m: print(m, flush=True)
) -> RetrainOutcome:
    """One daily run. Raises LockHeldError if another run holds the lock."""
    s = cfg.retrain
    days = available_days(cfg.job.data.root, s.ready_marker)  # before the registry is created
    reg = Registry(s.registry).ensure()
    with reg.lock(s.lock_stale_after_s, log=log):
        pause_point("locked", log)
        reg.recover(log)
        remove_old_attempts(cfg.job, log)
        production = reg.production()
        plan, what = plan_days(days, production, s.max_train_days)
        if plan is None:
            log(f"[retrain] nothing to do: {what}")
            return RetrainOutcome("no_new_days", what)
        return _train_and_publish(cfg, reg, production, plan, what, address, log)


def _train_and_publish(
    cfg: RetrainConfig,
    reg: Registry,
    production: Version | None,
    plan: DayPlan,
    what: str,
    address: str | None,
    log: Callable[[str], None],
) -> RetrainOutcome:
    from pipeline.data.feature_spec import load_spec
    from pipeline.data.files import list_day_files
    from pipeline.retrain.gate import decide, evaluate_export
    from pipeline.train.export import read_export_meta
    from pipeline.train.progress import said

    s, job = cfg.retrain, cfg.job
    vid = reg.next_version_id()
    attempt = f"{job.name}-{vid}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    # Training workers and the gate read production's checkpoint and export from local disk: a
    # registry at a URL is downloaded into the attempt's directory first (under output_dir,
    # where the run's own checkpoints go, so every training node sees it as they do).
    prod_files = os.path.join(os.path.abspath(job.output_dir), attempt, "production")
    warm = reg.fetch(production.checkpoint_dir, os.path.join(prod_files, CHECKPOINT)) if production else None
    prod_export = reg.fetch(production.export_dir, os.path.join(prod_files, EXPORT)) if production else None
    run_cfg = _run_config(job, plan, attempt, warm)
    start = f"warm start from {production.id}" if production else "from scratch (empty registry)"
    log(f"[retrain] candidate {vid}: {start}; {what}")
    result = _train_candidate(run_cfg, address, production)

    eval_files = list_day_files(job.data.root, plan.eval_day, plan.eval_day)
    tasks = load_spec(job.data.spec).task_names
    evaluate = lambda export: evaluate_export(export, eval_files, s)
    cand = evaluate(result.export_dir)
    prod = evaluate(prod_export) if production else None
    decision = decide(cand, prod, tasks, s)
    for task in tasks:
        vs = (
            f" (production {production.id}: {said(prod[f'{task}/auc'])} / {said(prod[f'{task}/logloss'])})"
            if production and prod
            else ""
        )
        gauc = f", GAUC {said(cand[f'{task}/gauc'])}" if f"{task}/gauc" in cand else ""
        log(
            f"[retrain] {plan.eval_day} {task}: candidate AUC/logloss {said(cand[f'{task}/auc'])} / "
            f"{said(cand[f'{task}/logloss'])}{gauc}{vs}"
        )
    if decision.not_compared:
        log(f"[retrain] not compared on {plan.eval_day}: {', '.join(decision.not_compared)}")
    filled = filled_from_metrics(result.metrics)
    if filled:
        log(f"[retrain] missing values filled in training: {describe_filled(filled)}")
    turnover = turnover_from_metrics(result.metrics)
    if turnover:
        since = production.id if production else "an empty mapping"
        log(f"[retrain] managed ids since {since}: {describe_turnover(turnover)}")

    staged = reg.stage(vid)
    try:
        shutil.copytree(result.export_dir, os.path.join(staged, EXPORT))
        shutil.copytree(result.checkpoint_dir, os.path.join(staged, CHECKPOINT))
        _annotate_export(os.path.join(staged, EXPORT), reg, vid)
        Path(staged, CONFIG).write_text(yaml.safe_dump(run_cfg.model_dump(mode="json"), sort_keys=False))
        shutil.copyfile(job.data.spec, os.path.join(staged, SPEC))
        record = {
            "created": now_iso(),
            "decision": "accepted" if decision.accepted else "rejected",
            "reason": None if decision.accepted else decision.reason,
            "parent": production.id if production else None,
            "warm_start": production is not None,
            "train_days": [plan.train_days[0], plan.train_days[-1]],
            "eval_day": plan.eval_day,
            # First and last day the weights have seen, through the chain of warm starts.
            "lineage_days": [
                production.record["lineage_days"][0] if production else plan.train_days[0],
                plan.train_days[-1],
            ],
            "data_root": os.path.abspath(job.data.root),
            "metrics": {
                "candidate": cand,
                "production": prod,
                "production_version": production.id if production else None,
            },
            "gate": {
                "checks": decision.checks,
                "default_tolerance": s.default_tolerance.model_dump(),
                "tolerance": {k: v.model_dump() for k, v in s.tolerance.items()},
            },
            "training": {"run": attempt, "steps": result.metrics.get("step"), "history": result.history},
            "model_version": read_export_meta(os.path.join(staged, EXPORT))["version"],
            "code_version": code_version(),
            "host": socket.gethostname(),
        }
        version = reg.publish(
            staged, vid, record, promote=decision.accepted, before_commit=lambda: pause_point("promote", log)
        )
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # recover() would remove it next time anyway
        raise
    if not s.keep_attempts:
        shutil.rmtree(result.run_dir, ignore_errors=True)
    if decision.accepted:
        msg = f"promoted {vid} to production" + (f" (was {production.id})" if production else "")
    else:
        assert production is not None  # without production there is nothing to be worse than
        msg = f"rejected {vid}, production stays {production.id}: {decision.reason}"
    log(f"[retrain] {msg}")
    _track(job, vid, plan, cand, prod, decision.accepted)
    return RetrainOutcome("promoted" if decision.accepted else "rejected", msg, vid, version.record)


def _track(job: JobConfig, vid: str, plan: DayPlan, cand: dict, prod: dict | None, accepted: bool) -> None:
    """The day's gate, to the job's trackers: `candidate/<task>/<metric>` and `production/...` at
    step N for version vN, in TensorBoard under <output_dir>/<name>/tensorboard/retrain/ and, with
    tracking.mlflow_uri, as an MLflow run named after the version in experiment <name>-retrain
    (the candidate's training run is logged too, under its attempt's name)."""
    from pipeline.train.tracking import TENSORBOARD_DIR, TensorBoardWriter, log_mlflow_run

    step = int(vid.lstrip("v"))
    values = {f"candidate/{k}": v for k, v in cand.items()}
    values.update({f"production/{k}": v for k, v in (prod or {}).items()})
    values["promoted"] = float(accepted)
    if job.tracking.tensorboard:
        writer = TensorBoardWriter(job.run_dir / TENSORBOARD_DIR / "retrain", every=1, rows_per_step=0)
        writer.scalars(step, values)
        writer.close()
    log_mlflow_run(
        job.tracking,
        experiment=f"{job.name}-retrain",
        run_name=vid,
        params={
            "version": vid,
            "train_days": f"{plan.train_days[0]}..{plan.train_days[-1]}",
            "eval_day": plan.eval_day,
        },
        final={**values, "step": step},
    )
