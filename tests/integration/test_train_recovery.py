"""Failures and restarts of the training job on the local Ray instance: a training worker
killed mid-run (Ray Train restarts the worker group, which resumes from the last checkpoint),
and a finished run continued on a different number of workers."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from helpers.process_utils import find_descendant, wait_for
from pipeline.train.config import load_config
from pipeline.train.launch import run_training
from pipeline.train.schedule import lr_factor

# 40k training rows at 2 x 128 rows per step: ~156 steps, a checkpoint every 40. Small
# batches make the run long enough in steps for a kill to land mid-training.
RUN = [
    "data.generate.rows=60000",
    "train.epochs=1",
    "train.batch_size=128",
    "train.checkpoint_every_steps=40",
    "cluster.max_failures=2",
    # A schedule that changes every step: a resumed run must continue it where it stopped.
    "train.lr_schedule.kind=cosine",
    "train.lr_schedule.warmup_steps=10",
    "train.lr_schedule.min_factor=0.1",
    "train.eval_every_steps=40",  # the factor is in every evaluation's metrics
]


def _config(root, name: str, *extra: str):
    return load_config(
        "configs/jobs/train_local.yaml",
        [f"data.root={root}/data", f"output_dir={root}/runs", f"name={name}", *RUN, *extra],
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("recovery")


@pytest.fixture(scope="module")
def baseline(ray_local, root, repo_root):
    os.chdir(repo_root)
    return run_training(_config(root, "baseline"))


def _registered_checkpoint(run_dir: str) -> bool:
    # Ray Train writes this snapshot after it has registered a checkpoint of every worker.
    snapshot = os.path.join(run_dir, "checkpoint_manager_snapshot.json")
    try:
        return "step_" in open(snapshot).read()
    except OSError:
        return False


def test_killed_worker_resumes_from_last_checkpoint(baseline, root):
    cfg = _config(root, "killed")
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run_training(cfg)), daemon=True)
    runner.start()
    wait_for(lambda: _registered_checkpoint(str(root / "runs" / "killed")), "the first checkpoint")
    # Ray Train workers are processes of this test's own local Ray instance.
    worker = wait_for(lambda: find_descendant(os.getpid(), "RayTrainWorker"), "a training worker process")
    os.kill(worker.pid, signal.SIGKILL)
    runner.join()

    result = outcome["result"]
    resumed = result.metrics["resumed_at"]
    assert len(resumed) == 1 and resumed[0] > 0 and resumed[0] % 40 == 0, resumed
    assert result.metrics["step"] == baseline.metrics["step"]  # it finished the epoch
    for task in ("ctr", "cvr"):
        killed, clean = result.metrics[f"val/{task}/auc"], baseline.metrics[f"val/{task}/auc"]
        assert abs(killed - clean) < 0.02, (task, killed, clean)
    # The learning rate after the resume is the schedule's at that step, as in the clean run:
    # the same factor at every evaluation, ending near the cosine's floor.
    clean_lr = {h["step"]: h["train/lr_factor"] for h in baseline.history}
    killed_lr = {h["step"]: h["train/lr_factor"] for h in result.history}
    after = [s for s in killed_lr if s > resumed[0]]
    assert after and all(killed_lr[s] == clean_lr[s] for s in after), (killed_lr, clean_lr)
    steps = result.metrics["step"]
    assert killed_lr[steps] == pytest.approx(lr_factor(cfg.train.lr_schedule, steps - 1, steps), abs=0.01)
    assert killed_lr[steps] < 0.15 < 0.5 < killed_lr[min(clean_lr)]


def test_rerun_of_a_finished_run_keeps_its_checkpoints(baseline, root):
    """The same command again (a retried submission, a scheduler's rerun) trains nothing and writes
    nothing: each rerun used to register the final checkpoint once more under one directory name,
    and the third had Ray Train delete that directory, the run's only final checkpoint."""
    run_dir = root / "runs" / "baseline"
    kept = sorted(p.name for p in run_dir.glob("step_*"))
    again = run_training(_config(root, "baseline"))
    assert sorted(p.name for p in run_dir.glob("step_*")) == kept
    snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    names = [c["checkpoint_dir_name"] for c in snapshot["checkpoint_results"]]
    assert len(names) == len(set(names)), names
    assert again.checkpoint_dir == baseline.checkpoint_dir and again.history == baseline.history
    assert again.metrics["done"] == 1 and again.metrics["resumed_at"] == baseline.metrics["resumed_at"]
    for task in ("ctr", "cvr"):
        assert again.metrics[f"val/{task}/auc"] == baseline.metrics[f"val/{task}/auc"]


def test_finished_run_continues_on_fewer_workers(baseline, root):
    """Same run name, one more epoch, 1 worker instead of 2: DCP reshards the tables."""
    steps_before = baseline.metrics["step"]
    result = run_training(_config(root, "baseline", "train.epochs=2", "cluster.num_workers=1"))
    assert result.metrics["resumed_at"] == [steps_before]
    assert result.metrics["cluster/workers"] == 1
    # One worker at 128 rows per step takes twice the steps for the second epoch's 40k rows.
    assert result.metrics["step"] == steps_before + 2 * steps_before
    extra = json.loads(Path(result.checkpoint_dir, "extra.json").read_text())
    assert extra["world_size"] == 1 and extra["epoch"] == 2
