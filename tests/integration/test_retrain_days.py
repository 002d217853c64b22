"""Daily retraining with the model registry: one simulated sequence of days on one registry
(the lock, the gate, day planning and registry recovery alone are in tests/unit/
test_retrain_units.py). The tests run in file order and build on each other:

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

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from helpers.process_utils import child_env, descendants, find_descendant, wait_for
from helpers.retrain_days import DAYS, attempt_dirs, registry_files, write_day
from pipeline.registry.versions import Registry
from pipeline.retrain.config import load_retrain_config
from pipeline.retrain.daily import PAUSE_ENV, retrain
from pipeline.retrain.gate import evaluate_export


# -- unit test: registry commit and recovery -------------------------------------------------------
# -- the simulated days ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, repo_root):
    os.chdir(repo_root)
    base = tmp_path_factory.mktemp("retrain")
    (base / "data").mkdir()
    overrides = [
        f"retrain.registry={base}/registry",
        f"output_dir={base}/runs",
        f"data.root={base}/data",
        "retrain.default_tolerance={max_auc_drop: 0.01, max_logloss_rise: 0.01}",
        "retrain.tolerance={}",
        "train.batch_size=512",
        "train.sparse_lr=0.2",
        "train.dense_lr=0.01",
        # One training worker: half the processes to start on a 2-core machine
        # (warm starts across worker counts are covered by test_train_recovery.py).
        "cluster.num_workers=1",
        "cluster.max_failures=0",
    ]
    return {
        "base": base,
        "data": base / "data",
        "registry": base / "registry",
        "runs": base / "runs",
        "overrides": overrides,
    }


def _config(world, *extra):
    return load_retrain_config("configs/jobs/retrain_local.yaml", [*world["overrides"], *extra])


def start_retrain(world, name: str, *extra: str, **env) -> subprocess.Popen:
    """`python -m jobs.retrain` as a scheduler would run it, in its own process group."""
    command = [sys.executable, "-m", "jobs.retrain", "--config", "configs/jobs/retrain_local.yaml"]
    with open(world["base"] / f"{name}.log", "w") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(
            [*command, *world["overrides"], *extra],
            env=child_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def output(world, name: str) -> str:
    return (world["base"] / f"{name}.log").read_text()


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group and every descendant (Ray's processes), by pid. Of a run
    that has ended (reaped: its pid may be another process's by now), only its group is left:
    the test's own assertion then says why, with the run's log."""
    tree = []
    if proc.poll() is None:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = [psutil.Process(proc.pid), *descendants(proc.pid)]
    with contextlib.suppress(ProcessLookupError):  # no process left in the group
        os.killpg(proc.pid, signal.SIGKILL)
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
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
    for f in (
        "export/dense.safetensors",
        "export/tables/user.safetensors",
        "export/model.json",
        "checkpoint/extra.json",
        "checkpoint/.metadata",
        "config.yaml",
        "feature_spec.yaml",
        "version.json",
    ):
        assert (Path(v.path) / f).is_file(), f
    assert not attempt_dirs(world["runs"])  # the attempt's Ray Train directory was removed
    # The day's gate, in the retrain's TensorBoard curves (step 1: version v0001).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    gate = EventAccumulator(str(world["runs"] / "ple-retrain" / "tensorboard" / "retrain")).Reload()
    [auc] = gate.Scalars("candidate/ctr/auc")
    assert auc.step == 1 and abs(auc.value - r["metrics"]["candidate"]["ctr/auc"]) < 1e-6
    assert [e.value for e in gate.Scalars("promoted")] == [1.0]
    # The registry's checkpoint holds optimizer state too (what tomorrow's warm start loads).
    import torch.distributed.checkpoint as dcp

    saved = dcp.FileSystemReader(v.checkpoint_dir).read_metadata().state_dict_metadata
    assert any(k.startswith("model.") for k in saved) and any(k.startswith("optim.") for k in saved)

    from jobs.registry import main as registry_cli

    listing = subprocess.run(
        [sys.executable, "-m", "jobs.registry", "list", "--registry", str(world["registry"])],
        capture_output=True,
        text=True,
        env=child_env(),
        check=True,
    ).stdout
    assert "v0001    production" in listing and "production: v0001" in listing, listing
    assert registry_cli(["show", "--registry", str(world["registry"]), "v0001"]) == 0


def test_rerun_without_new_days_does_nothing(world):
    before = registry_files(world["registry"])
    from jobs.retrain import main as retrain_cli

    out = retrain_cli(["--config", "configs/jobs/retrain_local.yaml", *world["overrides"]])
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
    log = lambda: output(world, "killed-training")
    try:
        # Training is under way once this attempt's Ray Train directory (named after the job's
        # pid) holds a checkpoint; a job that ended instead fails here with its log.
        snapshot = lambda: any(world["runs"].glob(f"*-{proc.pid}/checkpoint_manager_snapshot.json"))
        wait_for(lambda: snapshot() or proc.poll() is not None, "the first checkpoint", timeout=400, context=log)
        assert proc.poll() is None, log()
        assert find_descendant(proc.pid, "RayTrainWorker") is not None, log()
    finally:
        kill_tree(proc)
    assert registry_files(world["registry"]) == before, log()


def test_retrain_killed_during_promotion_leaves_registry_unchanged(world):
    before = registry_files(world["registry"])
    marker = world["base"] / "promote"
    proc = start_retrain(world, "killed-promotion", **{PAUSE_ENV: f"promote:{marker}"})
    try:
        wait_for(lambda: marker.exists() or proc.poll() is not None, "the promotion step", timeout=500)
        assert marker.exists(), output(world, "killed-promotion")
        # Everything is ready to commit: the version is staged in full, the gate has decided.
        staged = list((world["registry"] / ".staging").glob("v0002-*"))
        assert staged and (staged[0] / "export" / "model.json").is_file()
    finally:
        kill_tree(proc)
    assert registry_files(world["registry"]) == before, output(world, "killed-promotion")
    assert (world["registry"] / ".retrain.lock").exists()  # left behind: stale, taken over next


def _cold_start_metrics(world, files: list[str]) -> dict:
    """What a cold start would start from on these files: the model as initialised (same seed
    as the training workers), evaluated by the same code as the gate."""
    import torch

    from pipeline.data.feature_spec import load_spec
    from pipeline.train.export import write_export
    from ple_model import RecModel

    retrain_cfg = _config(world)
    cfg = retrain_cfg.job
    spec = load_spec(cfg.data.spec)
    torch.manual_seed(cfg.train.seed)
    model = RecModel(spec.embedding_bag_configs(), spec.num_dense, cfg.model)
    export = write_export(str(world["base"] / "cold-export"), model.state_dict(), cfg.model, spec)
    return evaluate_export(export, files, retrain_cfg.retrain)


def test_next_run_recovers_warm_starts_and_promotes(world):
    logs = []
    out = retrain(_config(world), log=logs.append)
    assert out.status == "promoted" and out.version == "v0002", (out, logs)
    assert any("took over stale lock" in m for m in logs), logs
    assert any("removed .staging/" in m for m in logs) or not any((world["registry"] / ".staging").iterdir())
    r = Registry(str(world["registry"])).production().record
    assert r["parent"] == "v0001" and r["warm_start"]
    assert (
        r["train_days"] == [DAYS[1], DAYS[1]] and r["eval_day"] == DAYS[2] and r["lineage_days"] == [DAYS[0], DAYS[1]]
    )
    assert r["metrics"]["production_version"] == "v0001"
    # Starting point on the new (held-out) day: the warm start's step-0 evaluation vs a cold start.
    start = r["training"]["history"][0]
    assert start["step"] == 0
    from pipeline.data.files import list_day_files

    cold = _cold_start_metrics(world, list_day_files(str(world["data"]), DAYS[2], DAYS[2]))
    for task in ("ctr", "cvr"):
        warm_loss, cold_loss = start[f"val/{task}/logloss"], cold[f"{task}/logloss"]
        assert warm_loss < cold_loss - 0.05, (task, warm_loss, cold_loss)
        # It starts exactly where production is on that day (the gate measured production there).
        assert abs(warm_loss - r["metrics"]["production"][f"{task}/logloss"]) < 1e-3
    assert not (world["registry"] / ".retrain.lock").exists()
    assert not attempt_dirs(world["runs"])  # killed attempts' directories removed too


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
    assert (Path(v.path) / "export" / "dense.safetensors").is_file()  # kept, for inspection
    meta = json.loads((Path(v.path) / "export" / "model.json").read_text())
    assert meta["registry"]["version"] == "v0003" and meta["checkpoint"] == v.checkpoint_dir


def test_failed_run_leaves_registry_unchanged(world):
    from pipeline.data.validation import DataValidationError

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
    from pipeline.registry.versions import resolve_model_ref

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
