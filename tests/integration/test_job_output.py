"""What a person sees when running the training job as `make demo` does: a short console (the
project's progress and results, not the libraries' chatter), the full logs in the run's
directory, and for a NaN met mid-epoch one start of the worker group (no retries, though
max_failures allows them: test_train_recovery.py keeps a killed worker retried), the error
line last and exit status 65; for a Ctrl-C, one line naming the checkpoint to resume from, and
(checked while it runs) no idle Ray workers that none of the job's tasks could use."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from helpers.process_utils import child_env, descendants, is_running, stop_tree, wait_for
from pipeline.common.errors import EXIT_BAD_DATA

SMALL = ["data.generate.rows=12000", "train.epochs=1", "train.batch_size=512", "cluster.max_failures=2"]
MAX_LINES = 30  # the demo's budget (make demo), for a run of any length: progress comes every 15 s


def _train_job(tmp_path: Path, repo_root: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [f"data.root={tmp_path}/data", f"output_dir={tmp_path}/runs", *SMALL, *extra]
    return subprocess.run(
        [sys.executable, "-m", "jobs.train", *overrides],
        cwd=repo_root,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # as a terminal shows them: interleaved
        text=True,
        timeout=600,
    )


def test_the_job_prints_a_short_summary_and_keeps_the_full_log(tmp_path, repo_root):
    proc = _train_job(tmp_path, repo_root)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert len(lines) <= MAX_LINES, proc.stdout
    for noise in ("Successfully loaded", "SplitTableBatchedEmbeddingBagsCodegen", "Reporting training result"):
        assert noise not in proc.stdout, noise
    assert "\x1b[" not in proc.stdout  # a console written to a file: no colour codes around the workers' lines
    assert any("[eval] step" in line for line in lines), proc.stdout
    run = tmp_path / "runs" / "ple-local"
    # It ends with the AUCs and where the checkpoint, the model and the logs went.
    assert [line.split(":")[0] for line in lines[-5:]] == ["ctr", "cvr", "checkpoint", "exported model", "full logs"]
    assert lines[-1] == f"full logs: {run / 'logs'}"
    # The libraries' lines are captured, not lost: fbgemm's library loads in every worker's log.
    for rank in (0, 1):
        assert "Successfully loaded" in (run / "logs" / f"worker-{rank}.log").read_text()
    assert "Started a local Ray instance" in (run / "logs" / "driver.log").read_text()


def test_bad_data_fails_fast_with_its_own_exit_status(ray_local, tmp_path, repo_root):
    from pipeline.data.files import list_day_files
    from pipeline.train.config import load_config
    from pipeline.train.launch import ensure_data

    cfg = load_config(
        repo_root / "configs/jobs/train_local.yaml",
        [f"data.root={tmp_path}/data", f"output_dir={tmp_path}/runs", *SMALL],
    )
    ensure_data(cfg)  # generated with the session's Ray (ray_local), as the job would
    bad = list_day_files(cfg.data.root, *cfg.data.train_days)[-1]  # the last file read: mid-epoch
    table = pq.read_table(bad)
    price = table["price"].to_numpy().astype(np.float64)
    price[-5] = np.nan
    price_type = table.schema.field("price").type
    pq.write_table(table.set_column(table.schema.get_field_index("price"), "price", pa.array(price, price_type)), bad)

    proc = _train_job(tmp_path, repo_root)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == EXIT_BAD_DATA, proc.stdout[-5000:]
    assert (
        lines[-1]
        == f"error: {bad}: column 'price': null or NaN dense values (set missing: default to fill them) (1 row)"
    )
    # One start of the worker group although max_failures=2 would allow two restarts.
    assert proc.stdout.count("[train] 2 workers started") == 1, proc.stdout
    # Once: no retry of the worker group, no library traceback of it on the console (Ray Train's
    # worker and controller log one each)...
    assert proc.stdout.count("null or NaN dense values") == 1, proc.stdout
    for traceback_of_it in ("Error in training function", "Error in control loop", "StopRun", "DataValidationError"):
        assert traceback_of_it not in proc.stdout, proc.stdout
    # ...where the worker's log has it.
    worker_logs = "".join(p.read_text() for p in (tmp_path / "runs" / "ple-local" / "logs").glob("worker-*.log"))
    assert "Error in training function" in worker_logs and "DataValidationError" in worker_logs


def test_ctrl_c_ends_with_the_checkpoint_to_resume_from(tmp_path, repo_root):
    """A terminal's Ctrl-C (SIGINT to the job's whole process group, its embedded Ray cluster
    included) mid-training: one error line naming the run's latest checkpoint, no traceback,
    exit status 1, and none of the job's processes left behind. The job used to exit 1 with
    nothing at all on the console."""
    overrides = [f"data.root={tmp_path}/data", f"output_dir={tmp_path}/runs", "data.generate.rows=12000"]
    # Many short epochs: training outlasts the wait for the first checkpoint.
    overrides += ["train.epochs=500", "train.batch_size=64", "train.checkpoint_every_steps=20"]
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.train", *overrides],
        cwd=repo_root,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job has
    )
    run = tmp_path / "runs" / "ple-local"
    snapshot = run / "checkpoint_manager_snapshot.json"
    try:
        wait_for(lambda: snapshot.is_file() and "step_" in snapshot.read_text(), "the first registered checkpoint")
        started = descendants(job.pid)
        idle_from_the_start = _workers_without_the_job_hook(started)
        os.killpg(job.pid, signal.SIGINT)
        out, _ = job.communicate(timeout=300)
        wait_for(lambda: not any(is_running(p) for p in started), "the job's processes to end")
    finally:
        stop_tree(job)
    last = out.strip().splitlines()[-1]
    assert job.returncode == 1 and "Traceback" not in out, out[-5000:]
    stopped = re.fullmatch(
        rf"error: training run {run} stopped before it finished \(interrupted, or its Ray cluster went away\); "
        rf"its latest checkpoint is ({run}/step_\d+): the same command resumes from it",
        last,
    )
    assert stopped, last
    assert (Path(stopped[1]) / "extra.json").is_file()
    # Every Ray worker of the embedded cluster ran the job's setup hook: the raylet started no
    # idle workers of its own for the driver (EMBEDDED_RAYLET_ENV), which none of the job's tasks
    # could use. The tests' clusters keep idle workers (tests/conftest.py), so they would be here.
    assert idle_from_the_start == [], idle_from_the_start


def _workers_without_the_job_hook(processes: list[psutil.Process]) -> list[str]:
    """The titles of the Ray workers among `processes` (the raylet gives each the job's id in
    RAY_JOB_ID) whose environment lacks the job's worker setup hook, which Ray hands to every
    worker of the job's runtime_env in WORKER_PROCESS_SETUP_HOOK_ENV_VAR."""
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR

    bare = []
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            env = proc.environ()
            if "RAY_JOB_ID" in env and WORKER_PROCESS_SETUP_HOOK_ENV_VAR not in env:
                bare.append(" ".join(proc.cmdline()).strip())  # its title: ray::IDLE, ray::<actor>
    return bare
