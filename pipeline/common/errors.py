"""The error every room raises for bad input (a config, a feature spec or data that cannot be
used as they are), and the jobs' exit statuses for it.

Bad input is deterministic (the same input fails the same way again), so a training run stops
at once instead of retrying (pipeline/train/fail_fast.py), a job prints it as one line, last,
with its own exit status, and the console leaves the libraries' tracebacks of it to the log file
(pipeline/common/logs.py).

Exit statuses of every job (retraining adds its own 3, jobs/retrain.py):

    0   success
    1   any other error
    65  bad data: a value the feature spec does not allow (a NaN, a null, a wrong type), rows
        that cannot be read (sysexits' EX_DATAERR)
    75  another job is working on it: a training run of the same output_dir and name, a
        registry's retrain (sysexits' EX_TEMPFAIL: the same command works once that job ends)
    78  bad configuration: a config or feature spec that does not validate, or that does not
        fit the files or the checkpoint (sysexits' EX_CONFIG)
    130 interrupted by Ctrl-C (128 + SIGINT, as a shell reports it), with what a rerun does; a
        training run that Ray Train aborts on Ctrl-C exits 1 (pipeline/train/launch.RunStopped)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

EXIT_BAD_DATA, EXIT_IN_USE, EXIT_BAD_CONFIG, EXIT_INTERRUPTED = 65, 75, 78, 130


class BadInputError(ValueError):
    """Bad input, named in the message (the file, key, column and rows it is about)."""

    exit_status = EXIT_BAD_CONFIG  # DataValidationError: EXIT_BAD_DATA


class InUseError(RuntimeError):
    """Another live job holds what this one needs (the message names it and what to do)."""


def fail(err: BaseException | str, status: int = 1) -> NoReturn:
    """Print `error: <err>` last, on stderr, and exit with `status`."""
    sys.stdout.flush()
    print(f"error: {err}", file=sys.stderr, flush=True)
    sys.exit(status)


@contextmanager
def exit_on_bad_input(*others: type[BaseException], rerun: str = "") -> Iterator[None]:
    """For a job's main: bad input exits with its status (65 data, 78 config or spec), what
    another job holds with 75, any of `others` (the job's own expected errors: a rejected
    export...) with 1, Ctrl-C with 130 and `rerun` (what running the same command again does);
    anything else is a bug and keeps its traceback."""
    try:
        yield
    except BadInputError as err:
        fail(err, err.exit_status)
    except InUseError as err:
        fail(err, EXIT_IN_USE)
    except others as err:
        fail(err)
    except KeyboardInterrupt:
        _shut_down_ray()
        fail(f"interrupted{': ' + rerun if rerun else ''}", EXIT_INTERRUPTED)


def _shut_down_ray() -> None:
    """Stop this process's Ray now rather than at exit: what its shutdown prints (the actors it
    stops, the tasks they leave) then comes before the job's error line, not after it."""
    ray = sys.modules.get("ray")  # never imported here: jobs that do not use Ray stay without it
    if ray is not None and ray.is_initialized():
        ray.shutdown()
