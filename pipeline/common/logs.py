"""Quiet job output: the project's own lines on the console, everything in a log file.

A run's console used to carry ~120 lines of library chatter (fbgemm's table arguments and
library loads, torchrec's planner notices, Ray Train's echo of every report) around the five
lines a user reads. Each process a job runs (the driver, every Ray Train worker, scoring
actors) calls `configure_logs`: the project's loggers (`ple.*`) and warnings raised by the
project's own code show on the console; library loggers and warnings go only to the log file
(with `verbose`, to the console too). Errors show whatever their origin.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pipeline.common.errors import BadInputError

PROJECT_LOGGER = "ple"
PROJECT_PACKAGES = ("pipeline", "ple_model", "jobs")
# The libraries whose INFO lines and warnings are for their own developers, each by its logger
# name and its package's directory name (warnings are matched on the file that raised them).
LIBRARIES = ("torchrec", "fbgemm_gpu", "torch", "ray", "pyarrow", "matplotlib", "mlflow", "tensorboard")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSE_ENV = "PLE_VERBOSE"
RAY_DATA_LOGGING_ENV = "RAY_DATA_LOGGING_CONFIG"
RAY_DATA_QUIET_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "logging" / "ray_data.yaml"
# Ray's switch for worker lines the driver never prints (read when Ray is imported): its C++
# notice, for each actor of its own (Ray Train's PreemptionWatcher, Ray Data's map workers) whose
# constructor arguments sit in the object store, that a restart could fail if they were lost.
# Nothing a user of the job can act on; it stays in Ray's own session logs.
RAY_SKIP_ENV = "RAY_DEDUP_LOGS_SKIP_REGEX"
RAY_NOTICES = r"has constructor arguments in the object store and max_restarts > 0"
# Ray's switch for the colour of the "(RayTrainWorker pid=...)" prefix it puts before each worker
# line the driver prints, read at every print. Colour codes help on a terminal; in a file (a
# scheduler's log, `ray job logs`, CI) they are escape sequences around every line.
RAY_COLOR_ENV = "RAY_COLOR_PREFIX"
_CONFIGURED = "_ple_configured"  # marks handlers this module added (a second call replaces them)


# Library deprecations that name the project's line that triggered them (stacklevel=2), by
# category and message: TorchRec's checkpoints are ShardedTensors, which torch deprecates.
LIBRARY_WARNINGS = (("FutureWarning", "we are deprecating ShardedTensor"),)


def _library_warning(record: logging.LogRecord) -> bool:
    """A warning captured from `warnings` (logger py.warnings) raised inside a library's files,
    or one of LIBRARY_WARNINGS."""
    if record.name != "py.warnings":
        return False
    message = record.getMessage()  # "<file>:<line>: <Category>: <message>"
    if any(f": {category}: " in message and text in message for category, text in LIBRARY_WARNINGS):
        return True
    return _library_file(message.split(":", 1)[0])


def _library_file(path: str) -> bool:
    """A file of an installed package (site-packages) that is not the project's."""
    parts = Path(path).parts
    return "site-packages" in parts and not any(p in parts for p in PROJECT_PACKAGES)


def _library_error(record: logging.LogRecord) -> BaseException | None:
    """The error a library's record is about: its own, or the one being handled while it is
    logged (Ray Train logs a worker's traceback as text). None for the project's records."""
    if record.name.split(".")[0] not in LIBRARIES:
        return None
    return record.exc_info[1] if record.exc_info else sys.exc_info()[1]


def _library_traceback_of_bad_input(record: logging.LogRecord) -> bool:
    """Ray Train's traceback of a BadInputError (logged in the worker, and in the controller that
    stops the run): the job prints the error itself, as one line, last."""
    error = _library_error(record)
    return isinstance(error, BadInputError) or isinstance(getattr(error, "controller_failure", None), BadInputError)


# gloo's words when the process at the other end of a collective is gone: the error of a worker
# whose peer died (killed, or stopped by an abort), never the cause itself.
PEER_GONE = ("Connection reset by peer", "Connection closed by peer")


def _library_error_of_a_gone_peer(record: logging.LogRecord) -> bool:
    """Ray Train's traceback of a worker's collective that failed because another worker ended
    first: the cause is said once by the driver's side (pipeline/train/fail_fast.py), and a
    Ctrl-C's abort ends the workers one by one."""
    error = _library_error(record)
    return isinstance(error, RuntimeError) and any(words in str(error) for words in PEER_GONE)


class ChosenSettingNotices(logging.Filter):
    """Drops a library's notice of a setting this project chose on purpose: Ray Data's "Progress
    bars disabled" (pipeline/common/ray_cluster.py turns them off: they print thousands of lines
    in job logs). Ray Data's console handler uses it too (configs/logging/ray_data.yaml)."""

    NOTICES = ("Progress bars disabled. To enable, set",)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(n) for n in self.NOTICES)


class ConsoleFilter(logging.Filter):
    """What the console shows when not verbose: the project's loggers, the project's warnings
    and every ERROR but the consequences of one said elsewhere (a bad input's traceback, a
    worker's lost peer); the rest (library INFO, library warnings) is left to the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return not (_library_traceback_of_bad_input(record) or _library_error_of_a_gone_peer(record))
        if not ChosenSettingNotices().filter(record):
            return False
        if record.name == PROJECT_LOGGER or record.name.startswith(PROJECT_LOGGER + "."):
            return True
        if record.name == "py.warnings":
            return not _library_warning(record)
        if record.name == "root" and _library_file(record.pathname):
            # A library's logging.warning(...) on the root logger: torchrec's planner says
            # "Sharding spec not found" of every data-parallel table.
            return False
        return record.levelno >= logging.WARNING and record.name.split(".")[0] not in LIBRARIES


def is_console_handler(handler: logging.Handler) -> bool:
    """A handler that prints to this process's stdout or stderr (not to a file)."""
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    return handler.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def with_verbose(overrides: list[str], verbose: bool) -> list[str]:
    """A job's dotted overrides with its --verbose flag as the config key it sets."""
    return [*overrides, "verbose=true"] if verbose else list(overrides)


def console_loggers() -> list[logging.Logger]:
    """The root and every library logger that does not propagate to it (Ray's, Ray Data's and
    torch's have handlers of their own): the loggers whose handlers print to the console."""
    loggers = [logging.getLogger()]
    for name, logger in sorted(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and not logger.propagate and name.split(".")[0] in LIBRARIES:
            loggers.append(logger)
    return loggers


def configure_logs(
    log_file: str | os.PathLike | None = None, verbose: bool = False, import_libraries: bool = True
) -> Path | None:
    """Route this process's logging and warnings (see the module docstring). `log_file`: the
    full log, appended to (its directory is made). Safe to call again: it replaces what an
    earlier call set up. `import_libraries`: import Ray Data and torch first, which set up
    their loggers on import (a process that never imports them saves the seconds it takes).
    Returns the log file's path; BadInputError (a job exits 78) if it cannot be written."""
    logging.captureWarnings(True)  # warnings -> logger py.warnings: filtered, and in the file
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"  # for the processes this one starts
    # Ray Data's own switch for its console, read when ray.data is imported. Only from a checkout
    # (an installed package has no configs/): Ray Data fails to import if the file is missing.
    if not verbose and RAY_DATA_QUIET_CONFIG.is_file():
        os.environ.setdefault(RAY_DATA_LOGGING_ENV, str(RAY_DATA_QUIET_CONFIG))
    if not verbose and "ray" not in sys.modules:  # too late once Ray is imported
        os.environ.setdefault(RAY_SKIP_ENV, RAY_NOTICES)
    if not (_is_terminal(sys.stdout) and _is_terminal(sys.stderr)):
        os.environ.setdefault(RAY_COLOR_ENV, "0")  # no colour codes in a file; the user's setting wins
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    logging.getLogger(PROJECT_LOGGER).setLevel(logging.INFO)
    # torchrec's INFO lines are per table and per batch (thousands in a run), fbgemm's per table
    # (its arguments in full): kept out of the log file too unless verbose.
    for name in ("torchrec", "fbgemm_gpu"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if import_libraries:  # Ray Data and torch set up their loggers when imported
        import ray.data  # noqa: F401
        import torch  # noqa: F401
    loggers = console_loggers()
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(handler, _CONFIGURED, False):  # an earlier call's
                logger.removeHandler(handler)
                handler.close()
                continue
            for f in [f for f in handler.filters if isinstance(f, ConsoleFilter)]:
                handler.removeFilter(f)
            if not verbose and is_console_handler(handler):
                handler.addFilter(ConsoleFilter())  # a console handler a library or Ray installed
    if not any(is_console_handler(h) for h in root.handlers):  # a Ray worker has one (Ray's); a driver has none
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        if not verbose:
            console.addFilter(ConsoleFilter())
        setattr(console, _CONFIGURED, True)
        root.addHandler(console)
    if log_file is None:
        return None
    path = Path(log_file)
    try:  # the job's first write under its output directory
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as e:
        raise BadInputError(f"cannot write the log file {path} ({e.strerror}): check the output directory") from None
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    setattr(file_handler, _CONFIGURED, True)
    for logger in loggers:
        logger.addHandler(file_handler)
    return path


def configure_worker_process() -> None:
    """Every process of the embedded cluster (Ray's worker setup hook): Ray Data's coordinators
    and Ray Train's controller log too. Console only; the job's --verbose reaches them through
    the environment."""
    # Not importing torch and Ray Data here: Ray starts worker processes all the time (read
    # tasks) and most never need torch; Ray Data's console is quiet through its config file.
    configure_logs(None, verbose=os.environ.get(VERBOSE_ENV) == "1", import_libraries=False)


def this_command(limit: int = 200) -> str:
    """This process's command line, cut to `limit` characters: who holds a lock, in its record."""
    text = " ".join(sys.argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plural(n: int, word: str, words: str | None = None) -> str:
    """1 file, 2 files, 1,200 rows; `words`: the plural where it is not `word` + s."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {words or word + 's'}"


def duration(seconds: float) -> str:
    """12 s, 3:05, 1:02:03."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
