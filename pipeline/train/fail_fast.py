"""Bad data and bad config end a training run at once.

Ray Train restarts the worker group after any worker error, up to `cluster.max_failures` times.
That is right for faults (a lost node, a killed process) and wrong for a NaN in a numeric column
or a spec that does not match the files: the same rows fail again on every attempt, and the log
repeats the error once per attempt. `FailFast`, a Ray Train callback run by the controller,
sees a worker's error before the failure policy does and stops the run when the error is one
of `NOT_RETRIED`; `unwrap_fail_fast` gives the driver back the worker's own exception.
"""

from __future__ import annotations

import logging
import os

from ray.exceptions import RayTaskError
from ray.train import ControllerError, UserCallback

from pipeline.common.errors import BadInputError
from pipeline.common.logs import PEER_GONE, PROJECT_LOGGER, VERBOSE_ENV, configure_logs

log = logging.getLogger(f"{PROJECT_LOGGER}.train")

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
    the failure policy (retried up to max_failures times), said in one line. Runs in Ray Train's
    controller, whose console it also quiets."""

    def __init__(self) -> None:
        self._console_quiet = False

    def _quiet_console(self) -> None:
        """Ray Train set up the controller's logging after the cluster's worker hook did: its
        tracebacks of a StopRun, or of a failed shutdown of a crashed or aborted worker group,
        would bury the job's lines on the console (pipeline/common/logs.py keeps them off it)."""
        if not self._console_quiet:
            configure_logs(None, verbose=os.environ.get(VERBOSE_ENV) == "1", import_libraries=False)
            self._console_quiet = True

    def after_report(self, run_context, metrics, checkpoint) -> None:
        self._quiet_console()  # the first report comes before anything worth quieting

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        self._quiet_console()
        errors = {rank: worker_error(exc) for rank, exc in sorted(worker_exceptions.items())}
        for rank, error in errors.items():
            if isinstance(error, NOT_RETRIED):
                # The controller turns an exception raised in a callback into a ControllerError,
                # which its default failure policy never retries.
                raise StopRun(rank, error)
        log.warning(
            f"[train] {describe_failure(errors)}; Ray Train restarts the workers from the latest checkpoint "
            "(up to cluster.max_failures times)"
        )


def describe_failure(errors: dict[int, BaseException]) -> str:
    """One line for the workers' errors: the cause, without the errors of the workers that only
    lost their peer in a collective (they follow from it)."""
    causes = {r: e for r, e in errors.items() if not any(words in str(e) for words in PEER_GONE)} or errors
    said = []
    for rank, error in causes.items():
        error = getattr(error, "health_check_failure", error)  # Ray Train's wrapper of a dead worker's error
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        # A dead actor's error says why on a line of its own (exit type and detail).
        why = next((line for line in lines if "is dead because" in line), lines[0])
        if len(why) > 200:  # to the last whole sentence that fits
            why = why[:200].rsplit(". ", 1)[0]
        said.append(f"worker {rank} failed: {type(error).__name__}: {why.rstrip('.')}")
    return "; ".join(said)


def unwrap_fail_fast(err: BaseException) -> BaseException:
    """The worker's own error if `err` (from TorchTrainer.fit) is a run FailFast stopped, else `err`."""
    if isinstance(err, ControllerError) and isinstance(err.controller_failure, StopRun):
        return err.controller_failure.error
    return err
