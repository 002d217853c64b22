"""Bad data and bad config end a training run at once.

Ray Train restarts the worker group after any worker error, up to `cluster.max_failures` times.
That is right for faults (a lost node, a killed process) and wrong for a NaN in a numeric column
or a spec that does not match the files: the same rows fail again on every attempt, and the log
repeats the error once per attempt. `FailFast`, a Ray Train callback run by the controller,
sees a worker's error before the failure policy does and stops the run when the error is one
of `NOT_RETRIED`; `unwrap_fail_fast` gives the driver back the worker's own exception.
"""

from __future__ import annotations

import os

from ray.exceptions import RayTaskError
from ray.train import ControllerError, UserCallback

from pipeline.common.errors import BadInputError
from pipeline.common.logs import VERBOSE_ENV, configure_logs

# Deterministic: a retry reads the same rows with the same spec and config. A ConfigError, a
# FeatureSpecError, a DataValidationError.
NOT_RETRIED: tuple[type[Exception], ...] = (BadInputError,)


class StopRun(BadInputError):
    """Raised in the controller: ends the run without a retry. Carries the worker's error."""

    def __init__(self, rank: int, error: BaseException) -> None:
        super().__init__(f"worker {rank}: {error}")
        self.rank, self.error = rank, error

    def __reduce__(self):
        return (self.__class__, (self.rank, self.error))


def worker_error(exc: BaseException) -> BaseException:
    """The exception the worker's code raised, out of Ray Train's and Ray core's wrappers.
    Ray Train wraps it in UserExceptionWithTraceback, whose public side is only the traceback
    text, so its `_base_exc` is read (tests/unit/test_fail_fast.py checks the pinned Ray has it)."""
    exc = getattr(exc, "_base_exc", exc)
    while isinstance(exc, RayTaskError) and exc.cause is not None:
        exc = exc.cause
    return exc


class FailFast(UserCallback):
    """Stops the run when a worker raised bad input (see NOT_RETRIED); other errors are left to
    the failure policy (retried up to max_failures times)."""

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        for rank, exc in sorted(worker_exceptions.items()):
            error = worker_error(exc)
            if isinstance(error, NOT_RETRIED):
                # Ray Train logs its traceback of StopRun: on the console that would bury the
                # job's one error line (pipeline/common/logs.py keeps it to the log files).
                configure_logs(None, verbose=os.environ.get(VERBOSE_ENV) == "1", import_libraries=False)
                # The controller turns an exception raised in a callback into a ControllerError,
                # which its default failure policy never retries.
                raise StopRun(rank, error)


def unwrap_fail_fast(err: BaseException) -> BaseException:
    """The worker's own error if `err` (from TorchTrainer.fit) is a run FailFast stopped, else `err`."""
    if isinstance(err, ControllerError) and isinstance(err.controller_failure, StopRun):
        return err.controller_failure.error
    return err
