"""Quiet output (pipeline/common/logs.py): library logs and warnings go to the log file only,
the project's own lines and warnings still show, and --verbose shows everything."""

from __future__ import annotations

import importlib
import io
import logging
import logging.config
import os
import sys
import warnings
from unittest import mock

import pytest

from helpers.worker_hook import run_worker_hook
from pipeline.common.logs import (
    RAY_COLOR_ENV,
    RAY_DATA_QUIET_CONFIG,
    ChosenSettingNotices,
    ConsoleFilter,
    configure_logs,
    console_loggers,
    is_console_handler,
    with_verbose,
)
from pipeline.common.ray_cluster import QUIET_RAY_LOGGERS

LIBRARY_FILE = f"{sys.prefix}/lib/python3.11/site-packages/torchrec/distributed/planner/types.py"
PROJECT_FILE = "/work/repo/pipeline/train/worker.py"


def _record(name: str, level: int, message: str, path: str = "x.py") -> logging.LogRecord:
    return logging.LogRecord(name, level, path, 1, message, (), None)


def _warning(message: str, category: type[Warning], filename: str) -> logging.LogRecord:
    # What logging.captureWarnings logs: warnings.formatwarning's text on logger py.warnings.
    return _record("py.warnings", logging.WARNING, warnings.formatwarning(message, category, filename, 10))


SHARDED = "Please use DTensor instead and we are deprecating ShardedTensor."
SHOWN = [
    _record("ple.train", logging.INFO, "[train] epoch 1/3 step 50 loss ctr=0.4"),
    _warning("train.foo is ignored on CPU", UserWarning, PROJECT_FILE),  # the project's own warning
    _record("ray.data", logging.ERROR, "a library's error still shows"),
    _record("my_plugin", logging.WARNING, "a warning of code that is not a known library"),
    _record("root", logging.WARNING, "a project script's logging.warning", PROJECT_FILE),
]
HIDDEN = [
    _record("root", logging.INFO, "Successfully loaded: 'fbgemm_gpu_tbe_training.so'"),  # fbgemm, on the root
    _record("torchrec.distributed.planner.types", logging.WARNING, "The topology was constructed directly"),
    _record("ray.train", logging.INFO, "Reporting training result 3: TrainingReport(...)"),
    _warning("HeuristicalStorageReservation is deprecated", FutureWarning, LIBRARY_FILE),
    # torch's deprecation, raised from the project's line that called isinstance (stacklevel=2).
    _warning(SHARDED, FutureWarning, "/work/repo/pipeline/train/checkpoint.py"),
    _record("ray.data._internal.progress", logging.WARNING, "Progress bars disabled. To enable, set `...`."),
    # torchrec's planner, on the root logger, of each data-parallel table.
    _record("root", logging.WARNING, "Sharding spec not found for model.ebc.device", LIBRARY_FILE),
]


def test_the_console_shows_the_projects_lines_and_real_errors_only():
    console = ConsoleFilter()
    assert [console.filter(r) for r in SHOWN] == [True] * len(SHOWN)
    assert [console.filter(r) for r in HIDDEN] == [False] * len(HIDDEN)


def test_a_librarys_traceback_of_bad_input_stays_off_the_console():
    from pipeline.data.validation import DataValidationError

    console = ConsoleFilter()
    traceback_text = _record("ray.train.v2._internal.util", logging.ERROR, "Error in training function: ...")
    try:  # Ray Train logs the traceback text while it handles the worker's exception
        raise DataValidationError("null or NaN dense values", file="part-0.parquet", column="price", count=1)
    except DataValidationError:
        assert not console.filter(traceback_text)  # the job prints it as one line, last
    try:
        raise MemoryError("out of memory")
    except MemoryError:
        assert console.filter(traceback_text)  # a fault: its traceback shows


def test_a_workers_traceback_of_its_lost_peer_stays_off_the_console():
    """The worker whose peer died (killed, or ended first by a Ctrl-C's abort) fails in its
    collective: the controller says the cause in one line (pipeline/train/fail_fast.py)."""
    console = ConsoleFilter()
    traceback_text = _record("ray.train.v2._internal.util", logging.ERROR, "Error in training function: ...")
    for said in ("Connection reset by peer", "Connection closed by peer"):
        try:
            raise RuntimeError(f"[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:37577: {said}. This is ...")
        except RuntimeError:
            assert not console.filter(traceback_text)
    try:
        raise RuntimeError("Connection reset by peer")
    except RuntimeError:  # the project's own error record still shows
        assert console.filter(_record("ple.train", logging.ERROR, "[train] ..."))


@pytest.mark.parametrize("verbose", [False, True])
def test_every_line_goes_to_the_file_and_every_console_is_filtered(clean_logging, tmp_path, verbose):
    path = configure_logs(tmp_path / "logs" / "driver.log", verbose=verbose)
    consoles = [h for lg in console_loggers() for h in lg.handlers if is_console_handler(h)]
    assert consoles and all(any(isinstance(f, ConsoleFilter) for f in h.filters) != verbose for h in consoles)
    for record in SHOWN + HIDDEN:
        logging.getLogger(record.name).handle(record)
    assert path is not None
    full = path.read_text()
    for record in SHOWN + HIDDEN:
        assert record.getMessage().splitlines()[0].strip() in full, record.getMessage()  # captured, not lost


def test_a_second_call_replaces_the_first(clean_logging, tmp_path):
    configure_logs(tmp_path / "a.log")
    configure_logs(tmp_path / "b.log")
    logging.getLogger("ple.train").info("only in b")
    for h in logging.getLogger().handlers:
        h.flush()
    assert "only in b" not in (tmp_path / "a.log").read_text()
    assert "only in b" in (tmp_path / "b.log").read_text()


def test_ray_data_quiet_config_is_the_pinned_rays_default_with_a_quieter_console():
    """configs/logging/ray_data.yaml is Ray Data's DEFAULT_CONFIG (private: this pins it) but for
    its console's level and one more console filter."""
    import pydoc

    import yaml
    from ray.data._internal.logging import DEFAULT_CONFIG

    ours = yaml.safe_load(RAY_DATA_QUIET_CONFIG.read_text())
    assert ours["loggers"] == DEFAULT_CONFIG["loggers"]
    assert ours["formatters"]["ray"] == DEFAULT_CONFIG["formatters"]["ray"]
    assert ours["handlers"]["file"] == DEFAULT_CONFIG["handlers"]["file"]
    console, default_console = ours["handlers"]["console"], DEFAULT_CONFIG["handlers"]["console"]
    assert (console["class"], console["formatter"]) == (default_console["class"], default_console["formatter"])
    assert (default_console["level"], console["level"]) == ("INFO", "WARNING")
    assert console["filters"] == [*default_console["filters"], "chosen_settings"]
    named = [f["()"] for f in ours["filters"].values()] + [h["class"] for h in ours["handlers"].values()]
    assert all(pydoc.locate(name) is not None for name in named), named  # they exist in the pinned Ray


def test_chosen_setting_notices_are_dropped():
    record = logging.LogRecord("ray.data._internal.progress", logging.WARNING, "", 0, "", (), None)
    record.msg = (
        "Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`."
    )
    assert not ChosenSettingNotices().filter(record) and not ConsoleFilter().filter(record)
    record.msg = "Ray Data ran out of disk"
    assert ChosenSettingNotices().filter(record)


def test_the_verbose_flag_is_the_verbose_config_key(repo_root):
    from pipeline.train.config import load_config

    overrides = ["train.epochs=1"]
    assert with_verbose(overrides, False) == ["train.epochs=1"] and overrides == ["train.epochs=1"]
    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", with_verbose(overrides, True))
    assert cfg.verbose and cfg.train.epochs == 1


def test_rays_notice_about_its_own_actors_is_skipped_by_rays_own_switch():
    from ray._private.ray_logging import LogDeduplicator

    from pipeline.common.logs import RAY_NOTICES

    notice = (
        "[2026-12-01 21:27:25,082 E 13758 13805] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' "
        "and ID: 'fb3da068d4349d78fa3f064901000000' has constructor arguments in the object store and "
        "max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor restart "
        "will fail. See https://github.com/ray-project/ray/issues/53727 for more details."
    )
    ours = "[train] 2 workers started"
    # What the driver does with each batch of worker lines it prints, RAY_DEDUP_LOGS_SKIP_REGEX set.
    printed = LogDeduplicator(5, None, RAY_NOTICES).deduplicate({"ip": "127.0.0.1", "pid": 7, "lines": [notice, ours]})
    assert [line for batch in printed for line in batch["lines"]] == [ours]


class _Stream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def _worker_line_as_the_driver_prints_it() -> str:
    from ray._private.worker import print_worker_logs  # what log_to_driver calls for each batch

    printed = io.StringIO()
    batch = {"pid": 7, "ip": "127.0.0.1", "localhost": "127.0.0.1", "actor_name": "RayTrainWorker"}
    print_worker_logs({**batch, "lines": ["[train] 2 workers started"]}, printed)
    return printed.getvalue()


@pytest.mark.parametrize("terminal", [True, False])
def test_worker_lines_carry_colour_codes_on_a_terminal_only(clean_logging, monkeypatch, terminal):
    monkeypatch.setattr(sys, "stdout", _Stream(terminal))
    monkeypatch.setattr(sys, "stderr", _Stream(terminal))
    configure_logs(None)
    line = _worker_line_as_the_driver_prints_it()
    assert line.endswith("(RayTrainWorker pid=7)" + ("\x1b[0m" if terminal else "") + " [train] 2 workers started\n")
    assert ("\x1b[" in line) == terminal, line


def test_a_colour_setting_of_the_users_own_is_kept(clean_logging, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Stream(False))
    monkeypatch.setenv(RAY_COLOR_ENV, "1")
    configure_logs(None)
    assert os.environ[RAY_COLOR_ENV] == "1" and "\x1b[" in _worker_line_as_the_driver_prints_it()


@pytest.fixture
def ray_train_loggers(clean_logging):
    """The Ray Train loggers as they were (level, handlers, filters), put back after the test:
    the test configures them as Ray Train's controller does."""
    for name in QUIET_RAY_LOGGERS:
        importlib.import_module(name)  # each module's logger exists before the snapshot
    train = [lg for name, lg in logging.Logger.manager.loggerDict.items() if name.split(".")[:2] == ["ray", "train"]]
    saved = {
        lg: (lg.level, list(lg.handlers), list(lg.filters), lg.propagate)
        for lg in train
        if isinstance(lg, logging.Logger)
    }
    yield
    for lg, (level, handlers, filters, propagate) in saved.items():
        lg.setLevel(level)
        lg.handlers[:], lg.filters[:], lg.propagate = handlers, filters, propagate


def test_the_quiet_loggers_are_the_pinned_rays_own():
    for name in QUIET_RAY_LOGGERS:
        assert importlib.import_module(name).logger.name == name


def test_ray_trains_harmless_warnings_stay_off_the_console_after_its_controller_configures_logs(ray_train_loggers):
    from ray.train.v2._internal.logging.logging import LoggingManager

    run_worker_hook()
    # Then the controller's own logging configuration (Ray Train's, with its console handler
    # writing here and its session-file handlers left out), which resets the levels below it.
    console = io.StringIO()
    handlers = {
        "console": {"class": "logging.StreamHandler", "stream": console},
        "file_train_sys_controller": {"class": "logging.NullHandler"},
        "file_train_app_controller": {"class": "logging.NullHandler"},
    }
    base = {"version": 1, "disable_existing_loggers": False, "loggers": {}, "handlers": handlers}
    with mock.patch.object(LoggingManager, "_get_base_logger_config_dict", return_value=base):
        logging.config.dictConfig(LoggingManager._get_controller_logger_config_dict(None))

    for quiet in QUIET_RAY_LOGGERS:
        logging.getLogger(quiet).warning(
            "Failed to send resource request: safe to ignore", exc_info=RuntimeError("late")
        )
    assert console.getvalue() == ""
    logging.getLogger(QUIET_RAY_LOGGERS[-1]).error("an error of a quiet logger")
    logging.getLogger("ray.train.v2._internal.execution.controller.controller").warning("a warning of another")
    assert console.getvalue().splitlines() == ["an error of a quiet logger", "a warning of another"]
