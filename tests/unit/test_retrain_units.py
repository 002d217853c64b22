"""The daily retrain's parts without training: the lock, the gate, day planning, and the
registry's publish / reject / recovery (tests/integration/test_retrain_days.py runs the job)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from helpers.retrain_days import DAYS, registry_files
from pipeline.common.config import ConfigError
from pipeline.registry.lock import FileLock, LockHeldError
from pipeline.registry.versions import Registry, Version
from pipeline.retrain import daily
from pipeline.retrain.config import RetrainSettings, TaskTolerance, load_retrain_config
from pipeline.retrain.daily import plan_days
from pipeline.retrain.gate import decide


# -- unit tests: the warm start -------------------------------------------------------------------
def test_a_spec_that_production_cannot_warm_start_says_what_retraining_can_do(monkeypatch):
    from pipeline.train import launch
    from pipeline.train.checkpoint import CheckpointMismatchError

    changed = ["spec.tables[category].hash_buckets: 1024 there, 2048 now"]

    def refused(cfg, address):
        raise CheckpointMismatchError("ckpt was trained with other settings", changed)

    monkeypatch.setattr(launch, "run_training", refused)
    production = Version("v0003", "/registry/versions/v0003", {}, "production")
    with pytest.raises(ConfigError) as err:
        daily._train_candidate(None, None, production)
    assert str(err.value) == (
        "production v0003 was trained with other settings than this config's (spec.tables[category].hash_buckets: "
        "1024 there, 2048 now); retraining warm-starts from it, so these cannot change. To train them, give "
        "retraining a new registry (retrain.registry=...): its first run trains from scratch"
    )
    # A mismatch the settings do not explain (the sharding plan) keeps its own message.
    changed.clear()
    with pytest.raises(CheckpointMismatchError):
        daily._train_candidate(None, None, production)


# -- unit tests: lock ------------------------------------------------------------------------------
def _dead_pid() -> int:
    """A pid that no process on this host has (as a crashed holder's), found without starting one."""
    for pid in range(int(Path("/proc/sys/kernel/pid_max").read_text()) - 1, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:  # someone else's process
            continue
    raise RuntimeError("every pid is in use")


def _write_lock(path, pid, host, age_s=0.0):
    Path(path).write_text(json.dumps({"pid": pid, "host": host, "started": time.time() - age_s, "token": "x"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = str(tmp_path / "lock")
    with (
        FileLock(path, stale_after_s=60),
        pytest.raises(LockHeldError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"),
    ):
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
    s = RetrainSettings(
        registry="x",
        default_tolerance=TaskTolerance(max_auc_drop=0.01),
        tolerance={"cvr": TaskTolerance(max_auc_drop=0.001, max_logloss_rise=0.01)},
    )
    prod = {"ctr/auc": 0.70, "ctr/logloss": 0.50, "cvr/auc": 0.70, "cvr/logloss": 0.60}
    assert decide({**prod, "ctr/auc": 0.695}, prod, ["ctr", "cvr"], s).accepted  # within ctr's 0.01
    d = decide({**prod, "cvr/auc": 0.698, "cvr/logloss": 0.62}, prod, ["ctr", "cvr"], s)
    assert not d.accepted and len(d.reasons) == 2 and all(r.startswith("cvr") for r in d.reasons)
    assert decide(prod, None, ["ctr", "cvr"], s).accepted  # first version: nothing to compare with


def test_tolerances_for_tasks_the_spec_lacks_fail_with_the_override_that_fixes_them(repo_root):
    config = repo_root / "configs/jobs/retrain_local.yaml"  # a cvr tolerance; Adult's tasks: income, never_married
    adult = f"data.spec={repo_root}/configs/features/adult.yaml"
    with pytest.raises(ConfigError, match=r"names tasks \['cvr'\] .*'retrain.tolerance=\{\}'") as failed:
        load_retrain_config(config, [adult])
    fix = str(failed.value).split("e.g. ")[1].split(" for ")[0].strip("'")
    assert load_retrain_config(config, [adult, fix]).retrain.tolerance == {}


def test_a_metric_the_held_out_day_cannot_measure_is_not_compared_and_said():
    """A held-out day without a conversion has no cvr AUC for either model: the gate compares
    the rest and says what it left out (it used to reject every candidate: 'worse by nan')."""
    s = RetrainSettings(registry="x", default_tolerance=TaskTolerance(max_auc_drop=0.01, max_logloss_rise=0.01))
    nan = float("nan")
    counts = {"ctr/count": 900.0, "ctr/positives": 90.0, "cvr/count": 90.0, "cvr/positives": 0.0}
    prod = {**counts, "ctr/auc": 0.70, "ctr/logloss": 0.50, "cvr/auc": nan, "cvr/logloss": 0.10}
    d = decide({**prod, "ctr/auc": 0.701}, prod, ["ctr", "cvr"], s)
    assert d.accepted and d.not_compared == ["cvr auc (no positive labels in 90 rows)"]
    assert decide({**prod, "ctr/auc": 0.65}, prod, ["ctr", "cvr"], s).reasons[0].startswith("ctr auc 0.6500")
    # Nothing measurable: rejected, saying so.
    empty = {"ctr/count": 0.0, "ctr/positives": 0.0, "ctr/auc": nan, "ctr/logloss": nan}
    d = decide(empty, empty, ["ctr"], s)
    assert (
        not d.accepted and d.reason == "nothing the held-out rows can measure: ctr auc (no rows), ctr logloss (no rows)"
    )
    # A NaN the labels do not explain is the candidate's own (a diverged model): rejected.
    d = decide({**prod, "ctr/auc": nan}, prod, ["ctr", "cvr"], s)
    assert not d.accepted and d.reasons[0].startswith("ctr auc nan vs production 0.7000")
    d = decide({**prod, "cvr/logloss": nan}, prod, ["ctr", "cvr"], s)  # one label explains AUC, not log loss
    assert not d.accepted and d.reasons == ["cvr logloss nan vs production 0.1000: worse by nan > tolerance 0.0100"]


def test_gate_on_gauc_when_asked():
    s = RetrainSettings(registry="x", default_tolerance=TaskTolerance(max_auc_drop=0.01, max_gauc_drop=0.002))
    prod = {"ctr/auc": 0.70, "ctr/logloss": 0.5, "ctr/gauc": 0.62}
    assert decide({**prod, "ctr/gauc": 0.619}, prod, ["ctr"], s).accepted
    d = decide({**prod, "ctr/gauc": 0.61}, prod, ["ctr"], s)  # AUC as good, GAUC 0.01 worse
    assert not d.accepted and d.reasons == ["ctr gauc 0.6100 vs production 0.6200: worse by 0.0100 > tolerance 0.0020"]
    without = {"ctr/auc": 0.70, "ctr/logloss": 0.5}
    with pytest.raises(ValueError, match="group_by"):  # asked for, but the spec has no groups
        decide(without, without, ["ctr"], s)


def _version(train, eval_day) -> Version:
    return Version("v0001", "/nowhere", {"train_days": train, "eval_day": eval_day}, "production")


def test_a_data_root_that_is_not_there_fails_before_the_registry_is_made(tmp_path, repo_root):
    """A scheduled run on a mistyped or unmounted data.root must not exit 0 ("nothing to do")
    every day."""
    cfg = load_retrain_config(
        repo_root / "configs/jobs/retrain_local.yaml",
        [f"data.root={tmp_path / 'not-mounted'}", f"retrain.registry={tmp_path / 'registry'}"],
    )
    with pytest.raises(ConfigError, match=rf"^data.root {tmp_path / 'not-mounted'}: no such directory"):
        daily.retrain(cfg)
    assert not (tmp_path / "registry").exists()
    (tmp_path / "not-mounted").mkdir()  # there, without days yet: nothing to do, said so
    said: list[str] = []
    assert daily.retrain(cfg, log=said.append).status == "no_new_days"
    assert "0 day(s) of logs" in said[-1]


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
def _publish_dummy(reg: Registry, promote: bool, **record):
    vid = reg.next_version_id()
    staged = reg.stage(vid)
    Path(staged, "export").mkdir()
    Path(staged, "export", "dense.safetensors").write_bytes(os.urandom(64))
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


def test_registry_cli_shows_production_and_refuses_a_version_for_list(tmp_path, capsys):
    from jobs.registry import main as registry_cli

    root = str(tmp_path / "reg")
    reg = Registry(root).ensure()
    with pytest.raises(SystemExit, match="no production version yet"):
        registry_cli(["show", "production", "--registry", root])
    _publish_dummy(reg, promote=True)
    _publish_dummy(reg, promote=False, decision="rejected", reason="worse")
    capsys.readouterr()
    assert registry_cli(["show", "production", "--registry", root]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == reg.get("v0001").path
    # `list ROOT` (the registry given where a version id goes) fails instead of listing the default.
    with pytest.raises(SystemExit) as exit_info:
        registry_cli(["list", root])
    assert exit_info.value.code == 2 and "list takes no version id" in capsys.readouterr().err
    assert registry_cli(["list", "--registry", root]) == 0
    assert "production: v0001" in capsys.readouterr().out
    # A promote while a retrain holds the registry: exit 75, as the retrain's own refusal.
    with reg.lock(), pytest.raises(SystemExit) as exit_info:
        registry_cli(["promote", "v0002", "--force", "--registry", root])
    assert exit_info.value.code == 75 and "lock" in capsys.readouterr().err
    assert reg.production().id == "v0001"
