"""Bad input stops a training run without retries (pipeline/train/fail_fast.py), and the jobs
exit with its documented status (pipeline/common/errors.py). No Ray cluster: the callback and the
exceptions are built here as Ray Train's controller hands them over."""

from __future__ import annotations

import logging
import pickle

import pytest
from ray.exceptions import RayTaskError
from ray.train import ControllerError

# The private wrapper fail_fast reads through: this pins that the Ray version still has it.
from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

from pipeline.common.config import ConfigError
from pipeline.data.validation import DataValidationError
from pipeline.train.fail_fast import FailFast, StopRun, describe_failure, unwrap_fail_fast, worker_error

BAD_ROWS = DataValidationError("null or NaN dense values", file="/d/part-0.parquet", column="price", count=2)


def _as_ray_train_hands_it_over(error: Exception) -> Exception:
    # A worker's exception: raised in a Ray task (Ray Data), wrapped by Ray Train's worker thread.
    task_error = RayTaskError("read", "Traceback ...", error).as_instanceof_cause()
    return UserExceptionWithTraceback(task_error, traceback_str="Traceback ...")


def test_worker_error_unwraps_ray_train_and_ray_core():
    assert worker_error(_as_ray_train_hands_it_over(BAD_ROWS)) is BAD_ROWS
    assert worker_error(UserExceptionWithTraceback(BAD_ROWS, traceback_str="tb")) is BAD_ROWS
    assert worker_error(BAD_ROWS) is BAD_ROWS


def test_bad_input_stops_the_run_and_faults_are_left_to_retries(clean_logging):
    callback = FailFast()
    with pytest.raises(StopRun) as stop:
        callback.after_exception(
            None, {0: RuntimeError("gloo: connection reset"), 1: _as_ray_train_hands_it_over(BAD_ROWS)}
        )
    assert stop.value.rank == 1 and stop.value.error is BAD_ROWS
    with pytest.raises(StopRun):
        callback.after_exception(None, {0: UserExceptionWithTraceback(ConfigError("bad key"), "tb")})
    # A fault (a killed peer, a lost node) is not bad input: the failure policy retries it.
    assert callback.after_exception(None, {0: RuntimeError("worker died"), 1: MemoryError()}) is None


def test_a_retried_failure_is_one_line_naming_its_cause(caplog, clean_logging):
    """Not the tracebacks of the controller and of the worker that lost its peer: one line."""
    # Ray Train's wrapper of a dead worker's error; private, read through its health_check_failure.
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    dead = RuntimeError(
        "The actor died unexpectedly before finishing this task.\n\tclass_name: RayTrainWorker\n"
        "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit "
        "detail: Worker unexpectedly exits with a connection error code 2. End of file. Some common causes "
        "include: (1) the process was killed by the OOM killer due to high memory usage."
    )
    lost_peer = RuntimeError("[pair.cc:537] Read error [127.0.0.1]:8595: Connection reset by peer. This is ...")
    errors = {
        0: WorkerHealthCheckFailedError("A worker health check failed.", dead),
        1: UserExceptionWithTraceback(lost_peer, traceback_str="tb"),
    }
    with caplog.at_level(logging.WARNING, logger="ple.train"):
        assert FailFast().after_exception(None, errors) is None  # retried
    assert [r.getMessage() for r in caplog.records if r.name == "ple.train"] == [
        "[train] worker 0 failed: RuntimeError: The actor is dead because its worker process has died. Worker exit "
        "type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of "
        "file; Ray Train restarts the workers from the latest checkpoint (up to cluster.max_failures times)"
    ]
    # Only lost peers (no other cause known): they are said.
    assert describe_failure({1: lost_peer}) == f"worker 1 failed: RuntimeError: {str(lost_peer).rstrip('.')}"


def test_the_driver_gets_the_workers_error_back():
    # The controller wraps what a callback raised in a ControllerError, sent to the driver pickled.
    err = pickle.loads(pickle.dumps(ControllerError(StopRun(1, BAD_ROWS))))
    cause = unwrap_fail_fast(err)
    assert isinstance(cause, DataValidationError) and (cause.file, cause.column, cause.count) == (
        "/d/part-0.parquet",
        "price",
        2,
    )
    other = ControllerError(RuntimeError("placement group timed out"))
    assert unwrap_fail_fast(other) is other


@pytest.mark.parametrize(
    ("error", "status"),
    [(BAD_ROWS, 65), (ConfigError("train.epochs: bad value (got 'x')"), 78), (RuntimeError("bug"), None)],
)
def test_train_job_exit_status(monkeypatch, capsys, repo_root, error, status):
    import jobs.train
    import pipeline.train.launch

    def failing_run(cfg, address=None):
        print("[train] epoch 0 step 10 ...")
        raise error

    import pipeline.common.logs

    monkeypatch.chdir(repo_root)  # the job's default config path is relative to it
    monkeypatch.setattr(pipeline.common.logs, "configure_logs", lambda *a, **k: None)  # not this process's
    monkeypatch.setattr(pipeline.train.launch, "run_training", failing_run)
    if status is None:  # a bug keeps its traceback
        with pytest.raises(RuntimeError, match="bug"):
            jobs.train.main([])
        return
    with pytest.raises(SystemExit) as exit_:
        jobs.train.main([])
    assert exit_.value.code == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {error}"  # the one error line, last
