"""Daily retraining with the model registry (issue 6).

Unit tests first (lock, gate, day planning, registry recovery: no training). Then one simulated
sequence of days on one registry; those tests run in file order and build on each other:

    days 1-2 ............ first run: from scratch, promoted (v0001); a rerun has nothing to do
                          two retrains started together: exactly one runs
    day 3 arrives ....... a retrain killed during training, one killed during promotion: the
                          registry is unchanged; the next run warm-starts (starting loss on the
                          new day far below a cold start's) and is promoted (v0002)
    days 4 (labels shuffled), 5 ... a candidate trained on the shuffled day is rejected
                          (v0003, with the reason); production stays v0002

Killed runs are `python -m jobs.retrain` subprocesses in their own process group, killed by
pid with SIGKILL (their whole tree), as a scheduler's node failure or OOM killer would.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from pipeline.gate import decide, evaluate_export
from pipeline.lock import FileLock, LockHeldError
from pipeline.registry import Registry, Version
from pipeline.retrain import PAUSE_ENV, plan_days, retrain
from pipeline.retrain_config import RetrainSettings, TaskTolerance, load_retrain_config
from process_utils import child_env, descendants, find_descendant, wait_for

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
ROWS = 20_000  # per day; a small catalogue (300 users, 100 items) so that one day teaches a lot


# -- unit tests: lock ------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(path, pid, host, age_s=0.0):
    Path(path).write_text(json.dumps({"pid": pid, "host": host, "started": time.time() - age_s, "token": "x"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = str(tmp_path / "lock")
    with FileLock(path, stale_after_s=60):
        with pytest.raises(LockHeldError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            FileLock(path, stale_after_s=60).acquire()
    assert not os.path.exists(path)  # released


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    path, logs = str(tmp_path / "lock"), []
    _write_lock(path, _dead_pid(), socket.gethostname())
    with FileLock(path, stale_after_s=3600, log=logs.append) as lock:
        assert json.loads(Path(path).read_text())["pid"] == os.getpid()
        assert lock.token
    assert any("took over stale lock" in m and "is gone" in m for m in logs), logs


def test_lock_without_heartbeat_is_stale_only_after_the_configured_age(tmp_path):
    path = str(tmp_path / "lock")
    # A live pid on another host: only the heartbeat's age can tell whether it is stale.
    _write_lock(path, os.getpid(), "some-other-host", age_s=30)
    with pytest.raises(LockHeldError, match="some-other-host"):
        FileLock(path, stale_after_s=60).acquire()
    logs = []
    with FileLock(path, stale_after_s=10, log=logs.append):
        pass
    assert any("no heartbeat" in m for m in logs), logs


def test_heartbeat_keeps_a_long_run_fresh_and_release_leaves_others_lock(tmp_path):
    path = str(tmp_path / "lock")
    lock = FileLock(path, stale_after_s=2.0, heartbeat_s=0.2).acquire()
    time.sleep(2.5)  # longer than stale_after_s: the heartbeat must have kept it fresh
    with pytest.raises(LockHeldError):
        FileLock(path, stale_after_s=2.0).acquire()
    # Had it been taken over (say, after a long pause), releasing must not delete the new owner's.
    lock._stop.set()
    _write_lock(path, os.getpid(), socket.gethostname())
    lock.release()
    assert os.path.exists(path)


# -- unit tests: gate and days ---------------------------------------------------------------------
def test_gate_tolerance_per_task():
    s = RetrainSettings(registry="x", default_tolerance=TaskTolerance(max_auc_drop=0.01),
                        tolerance={"cvr": TaskTolerance(max_auc_drop=0.001, max_logloss_rise=0.01)})
    prod = {"ctr/auc": 0.70, "ctr/logloss": 0.50, "cvr/auc": 0.70, "cvr/logloss": 0.60}
    assert decide({**prod, "ctr/auc": 0.695}, prod, ["ctr", "cvr"], s).accepted  # within ctr's 0.01
    d = decide({**prod, "cvr/auc": 0.698, "cvr/logloss": 0.62}, prod, ["ctr", "cvr"], s)
    assert not d.accepted and len(d.reasons) == 2 and all(r.startswith("cvr") for r in d.reasons)
    assert decide(prod, None, ["ctr", "cvr"], s).accepted  # first version: nothing to compare with


def _version(train, eval_day) -> Version:
    return Version("v0001", "/nowhere", {"train_days": train, "eval_day": eval_day}, "production")


def test_day_planning():
    d = DAYS
    assert plan_days(d[:1], None)[0] is None  # a first model needs two days
    plan, _ = plan_days(d[:3], None)
    assert (plan.train_days, plan.eval_day) == (d[:2], d[2])
    prod = _version([d[0], d[0]], d[1])
    assert plan_days(d[:2], prod)[0] is None  # nothing newer than its evaluation day
    plan, _ = plan_days(d, prod)  # the held-out day 2 is trained on now; day 5 held out
    assert (plan.train_days, plan.eval_day) == (d[1:4], d[4])
    assert plan_days(d, prod, max_train_days=1)[0].train_days == [d[3]]


# -- unit test: registry commit and recovery -------------------------------------------------------
def registry_files(root) -> dict[str, str]:
    """sha256 of every file of the registry: the versions and the production pointer (not the
    hidden .staging/ work area or the lock, which are not part of it)."""
    root, out = Path(root), {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("."):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _publish_dummy(reg: Registry, promote: bool, **record):
    vid = reg.next_version_id()
    staged = reg.stage(vid)
    Path(staged, "export").mkdir()
    Path(staged, "export", "weights.pt").write_bytes(os.urandom(64))
    return reg.publish(staged, vid, {"train_days": ["a", "b"], "eval_day": "c", **record}, promote=promote)


def test_registry_publish_reject_and_interrupted_promotion(tmp_path, monkeypatch):
    reg = Registry(str(tmp_path / "reg")).ensure()
    _publish_dummy(reg, promote=True)
    _publish_dummy(reg, promote=False, decision="rejected", reason="worse")
    assert [(v.id, v.status) for v in reg.versions()] == [("v0001", "production"), ("v0002", "rejected")]
    assert reg.get("v0002").record["reason"] == "worse"
    before = registry_files(reg.root)

    # Killed between the version's rename and the pointer switch (simulated by a failing switch).
    def boom(*a, **k):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(reg, "set_production", boom)
    with pytest.raises(KeyboardInterrupt):
        _publish_dummy(reg, promote=True)
    monkeypatch.undo()
    assert reg.get("v0003").status == "incomplete" and reg.production().id == "v0001"
    assert reg.recover(log=lambda m: None) == ["versions/v0003 (promotion interrupted before the pointer switch)"]
    assert registry_files(reg.root) == before
    # A rollback is a pointer switch with history; the retired version stays (not 'incomplete').
    _publish_dummy(reg, promote=True)
    reg.set_production("v0001", by="manual", note="rollback")
    assert [v.status for v in reg.versions()] == ["production", "rejected", "retired"]
    assert reg.recover(log=lambda m: None) == []


# -- the simulated days ----------------------------------------------------------------------------
def write_day(root: Path, index: int, shuffle_labels: bool = False, rows: int = ROWS) -> None:
    """One day of synthetic logs. shuffle_labels: the (click, conversion) pairs are permuted
    across rows, so labels no longer depend on the features (conversion still implies click)."""
    from pipeline.synthetic import SyntheticConfig, write_file

    path = root / f"dt={DAYS[index]}" / "part-00000.parquet"
    write_file(str(path), rows, seed=7, day_index=index, file_index=0,
               config=SyntheticConfig(num_users=300, num_items=100))
    if shuffle_labels:
        table = pq.read_table(path)
        perm = np.random.default_rng(index).permutation(table.num_rows)
        for col in ("click", "conversion"):
            table = table.set_column(table.schema.get_field_index(col), col, table[col].take(perm))
        tmp = path.with_name(".shuffled.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)


@pytest.fixture(scope="module")
def world(tmp_path_factory, repo_root):
    os.chdir(repo_root)
    base = tmp_path_factory.mktemp("retrain")
    (base / "data").mkdir()
    overrides = [f"retrain.registry={base}/registry", f"output_dir={base}/runs", f"data.root={base}/data",
                 "retrain.default_tolerance={max_auc_drop: 0.01, max_logloss_rise: 0.01}", "retrain.tolerance={}",
                 "train.batch_size=512", "train.sparse_lr=0.2", "train.dense_lr=0.01",
                 # One training worker: half the processes to start on a 2-core machine
                 # (warm starts across worker counts are covered by test_train_recovery.py).
                 "cluster.num_workers=1", "cluster.max_failures=0"]
    return {"base": base, "data": base / "data", "registry": base / "registry", "runs": base / "runs",
            "overrides": overrides}


def _config(world, *extra):
    return load_retrain_config("configs/retrain_local.yaml", [*world["overrides"], *extra])


def start_retrain(world, name: str, *extra: str, **env) -> subprocess.Popen:
    """`python -m jobs.retrain` as a scheduler would run it, in its own process group."""
    log = open(world["base"] / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "jobs.retrain", "--config", "configs/retrain_local.yaml",
                             *world["overrides"], *extra], env=child_env(**env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def output(world, name: str) -> str:
    return (world["base"] / f"{name}.log").read_text()


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group and every descendant (Ray's processes), by pid."""
    tree = [psutil.Process(proc.pid), *descendants(proc.pid)]
    os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=60)
    proc.wait(timeout=60)


def test_first_run_trains_from_scratch_and_promotes(ray_local, world):
    write_day(world["data"], 0)
    write_day(world["data"], 1)
    out = retrain(_config(world))
    assert out.status == "promoted" and out.version == "v0001", out
    reg = Registry(str(world["registry"]))
    v = reg.production()
    r = v.record
    assert v.id == "v0001" and r["parent"] is None and not r["warm_start"]
    assert r["train_days"] == [DAYS[0], DAYS[0]] and r["eval_day"] == DAYS[1] and r["metrics"]["production"] is None
    assert r["metrics"]["candidate"]["ctr/auc"] > 0.6 and r["code_version"]
    for f in ("export/weights.pt", "export/model.json", "checkpoint/extra.json", "checkpoint/.metadata",
              "config.yaml", "feature_spec.yaml", "version.json"):
        assert (Path(v.path) / f).is_file(), f
    assert not list(world["runs"].iterdir())  # the attempt's Ray Train directory was removed
    # The registry's checkpoint holds optimizer state too (what tomorrow's warm start loads).
    import torch.distributed.checkpoint as dcp
    saved = dcp.FileSystemReader(v.checkpoint_dir).read_metadata().state_dict_metadata
    assert any(k.startswith("model.") for k in saved) and any(k.startswith("optim.") for k in saved)

    from jobs.registry import main as registry_cli
    listing = subprocess.run([sys.executable, "-m", "jobs.registry", "list", "--registry", str(world["registry"])],
                             capture_output=True, text=True, env=child_env(), check=True).stdout
    assert "v0001    production" in listing and "production: v0001" in listing, listing
    assert registry_cli(["show", "--registry", str(world["registry"]), "v0001"]) == 0


def test_rerun_without_new_days_does_nothing(world):
    before = registry_files(world["registry"])
    from jobs.retrain import main as retrain_cli

    out = retrain_cli(["--config", "configs/retrain_local.yaml", *world["overrides"]])
    assert out.status == "no_new_days" and f"no new days since {DAYS[1]}" in out.message
    assert registry_files(world["registry"]) == before


def test_two_concurrent_retrains_exactly_one_runs(world):
    markers = [world["base"] / f"locked-{i}" for i in range(2)]
    procs = [start_retrain(world, f"concurrent-{i}", **{PAUSE_ENV: f"locked:{markers[i]}"}) for i in range(2)]
    try:
        # The winner pauses holding the lock; the other must give up on its own meanwhile.
        held = lambda: next((str(i) for i in range(2) if markers[i].exists()), None)
        winner = int(wait_for(held, "one retrain to take the lock"))
        loser = 1 - winner
        assert procs[loser].wait(timeout=120) == 75, output(world, f"concurrent-{loser}")
        assert not markers[loser].exists()
        message = output(world, f"concurrent-{loser}")
        assert "another retrain holds the lock" in message and f"pid {procs[winner].pid}" in message, message
        markers[winner].unlink()  # let the winner go on: it finds no new day and exits cleanly
        assert procs[winner].wait(timeout=120) == 0, output(world, f"concurrent-{winner}")
        assert "nothing to do" in output(world, f"concurrent-{winner}")
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p)


def test_retrain_killed_during_training_leaves_registry_unchanged(world):
    write_day(world["data"], 2)
    before = registry_files(world["registry"])
    proc = start_retrain(world, "killed-training", "train.checkpoint_every_steps=10")
    try:
        # Training is under way once the attempt's Ray Train directory holds a checkpoint.
        wait_for(lambda: any(world["runs"].glob("*/checkpoint_manager_snapshot.json")), "the first checkpoint",
                 timeout=400)
        assert find_descendant(proc.pid, "RayTrainWorker") is not None
    finally:
        kill_tree(proc)
    assert registry_files(world["registry"]) == before, output(world, "killed-training")


def test_retrain_killed_during_promotion_leaves_registry_unchanged(world):
    before = registry_files(world["registry"])
    marker = world["base"] / "promote"
    proc = start_retrain(world, "killed-promotion", **{PAUSE_ENV: f"promote:{marker}"})
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, "the promotion step", timeout=500)
        assert marker.exists(), output(world, "killed-promotion")
        # Everything is ready to commit: the version is staged in full, the gate has decided.
        staged = list((world["registry"] / ".staging").glob("v0002-*"))
        assert staged and (staged[0] / "export" / "weights.pt").is_file()
    finally:
        kill_tree(proc)
    assert registry_files(world["registry"]) == before, output(world, "killed-promotion")
    assert (world["registry"] / ".retrain.lock").exists()  # left behind: stale, taken over next


def _cold_start_metrics(world, files: list[str]) -> dict:
    """What a cold start would start from on these files: the model as initialised (same seed
    as the training workers), evaluated by the same code as the gate."""
    import torch

    from pipeline.export import write_export
    from pipeline.feature_spec import load_spec
    from ple_model import RecModel

    cfg = _config(world).job
    spec = load_spec(cfg.data.spec)
    torch.manual_seed(cfg.train.seed)
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, cfg.model)
    export = write_export(str(world["base"] / "cold-export"), model.state_dict(), cfg.model, spec)
    return evaluate_export(export, files)


def test_next_run_recovers_warm_starts_and_promotes(world):
    logs = []
    out = retrain(_config(world), log=logs.append)
    assert out.status == "promoted" and out.version == "v0002", (out, logs)
    assert any("took over stale lock" in m for m in logs), logs
    assert any("removed .staging/" in m for m in logs) or not any((world["registry"] / ".staging").iterdir())
    r = Registry(str(world["registry"])).production().record
    assert r["parent"] == "v0001" and r["warm_start"]
    assert r["train_days"] == [DAYS[1], DAYS[1]] and r["eval_day"] == DAYS[2] and r["lineage_days"] == [DAYS[0], DAYS[1]]
    assert r["metrics"]["production_version"] == "v0001"
    # Starting point on the new (held-out) day: the warm start's step-0 evaluation vs a cold start.
    start = r["training"]["history"][0]
    assert start["step"] == 0
    from pipeline.reader import list_day_files
    cold = _cold_start_metrics(world, list_day_files(str(world["data"]), DAYS[2], DAYS[2]))
    for task in ("ctr", "cvr"):
        warm_loss, cold_loss = start[f"val/{task}/logloss"], cold[f"{task}/logloss"]
        assert warm_loss < cold_loss - 0.05, (task, warm_loss, cold_loss)
        # It starts exactly where production is on that day (the gate measured production there).
        assert abs(warm_loss - r["metrics"]["production"][f"{task}/logloss"]) < 1e-3
    assert not (world["registry"] / ".retrain.lock").exists()
    assert not list(world["runs"].iterdir())  # killed attempts' directories removed too


def test_worse_candidate_is_rejected_and_production_stays(world):
    write_day(world["data"], 3, shuffle_labels=True)
    write_day(world["data"], 4)
    # Train on the shuffled day only (the newest training day), evaluate on clean day 5.
    out = retrain(_config(world, "retrain.max_train_days=1"))
    assert out.status == "rejected" and out.version == "v0003", out
    reg = Registry(str(world["registry"]))
    v = reg.get("v0003")
    assert v.status == "rejected" and v.record["decision"] == "rejected"
    assert "auc" in v.record["reason"] and "worse by" in v.record["reason"], v.record["reason"]
    assert v.record["train_days"] == [DAYS[3], DAYS[3]] and v.record["parent"] == "v0002"
    assert reg.production().id == "v0002"
    assert (Path(v.path) / "export" / "weights.pt").is_file()  # kept, for inspection
    meta = json.loads((Path(v.path) / "export" / "model.json").read_text())
    assert meta["registry"]["version"] == "v0003" and meta["checkpoint"] == v.checkpoint_dir


def test_failed_run_leaves_registry_unchanged(world):
    from pipeline.validation import DataValidationError

    day = world["data"] / "dt=2026-03-06"
    day.mkdir()
    (day / "part-00000.parquet").write_bytes(b"not a parquet file")  # a corrupt delivery
    before = registry_files(world["registry"])
    with pytest.raises(DataValidationError, match="part-00000.parquet"):
        retrain(_config(world))
    assert registry_files(world["registry"]) == before
    assert not (world["registry"] / ".retrain.lock").exists()  # released on the way out
    shutil.rmtree(day)


def test_manual_rollback_and_model_reference(world):
    from jobs.registry import main as registry_cli
    from pipeline.registry import resolve_model_ref

    root = str(world["registry"])
    with pytest.raises(SystemExit, match="was rejected"):
        registry_cli(["promote", "--registry", root, "v0003"])
    assert registry_cli(["promote", "--registry", root, "v0001", "--note", "rollback test"]) == 0
    reg = Registry(root)
    assert [v.status for v in reg.versions()] == ["production", "retired", "rejected"]
    last = reg.pointer()["history"][-1]
    assert (last["version"], last["by"], last["note"]) == ("v0001", "manual", "rollback test")
    assert resolve_model_ref(f"{root}@production") == reg.get("v0001").export_dir
    assert resolve_model_ref(f"{root}@v0002") == reg.get("v0002").export_dir
    assert resolve_model_ref("runs/x/export") is None  # not a registry reference
