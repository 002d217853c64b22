"""Connecting a job's driver to Ray, shared by the jobs (training's launch.py, scoring): join
the cluster that `ray job submit` names in RAY_ADDRESS, else start an embedded local one."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

from pipeline.common.environ import environ_defaults
from pipeline.common.logs import RAY_DATA_LOGGING_ENV, VERBOSE_ENV

WORKER_SETUP_HOOK = "pipeline.common.ray_cluster.setup_worker"
# Python collects garbage every 700 net new container objects (thresholds (700, 10, 10)), and
# its full collections scan every live object. Importing Ray Train, torch and torchrec creates
# several hundred thousand, so a new Ray process spent about a sixth of its imports' CPU in
# collections: Ray Train, Ray Data, torch, torchrec and torchmetrics after Ray took 3.4-3.6 CPU-s
# with Python's thresholds, 2.9-3.0 with these (benchmarks/bench_worker_imports.py: 0.82-0.86 on
# 2 cores). A training run starts a dozen such processes. Objects without reference cycles are
# freed at once either way; cyclic garbage waits for at most 50,000 new objects.
GC_THRESHOLDS = (50_000, 20, 20)


def collect_less_often() -> None:
    """Raise this process's garbage-collection thresholds to GC_THRESHOLDS (never lower them;
    a process that turned collection off, threshold 0, keeps it off). Run where a process is
    about to import Ray Train, torch and torchrec: the jobs' drivers (connect) and the embedded
    cluster's worker processes (setup_worker)."""
    current = gc.get_threshold()
    if current[0] == 0:
        return
    gc.set_threshold(*(max(had, wanted) for had, wanted in zip(current, GC_THRESHOLDS, strict=True)))


# The embedded cluster's raylet settings (Ray's RayConfig reads RAY_<name> from the raylet's
# environment). By default a raylet starts one idle worker per CPU for the first driver, with an
# empty runtime_env. This cluster's tasks and actors all carry the job's runtime_env (the setup
# hook below), so none could use them: on 2 CPUs, two processes of ~100 MB and 0.4-0.8 CPU-s
# each that never ran a task (and, kept idle for the tests, 3.7 CPU-s each over a 10-minute suite).
EMBEDDED_RAYLET_ENV = {"RAY_prestart_worker_first_driver": "0"}

# How long a driver told to join a cluster waits for something to listen at its address. Ray's
# own connection retries last about 13 minutes where nothing listens (20 tries of about 40 s,
# ray._private.node), printing only its C++ warnings: a mistyped address looked like a hang.
REACH_TIMEOUT_S = 60.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """ConfigError unless something accepts a TCP connection at the cluster address `address`
    ("host:port", as --address or RAY_ADDRESS give it) within `timeout_s`, trying every second.
    Addresses of other forms ("auto", "local", "ray://...") pass unchecked. A loopback host is
    also tried at this node's IP, which Ray connects to instead."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    hosts = [host.strip("[]")]
    if hosts[0] in LOOPBACK_HOSTS:
        import ray.util

        hosts.append(ray.util.get_node_ip_address())
    deadline = time.monotonic() + timeout_s
    while True:
        for h in hosts:
            try:
                socket.create_connection((h, int(port)), timeout=2).close()
                return
            except OSError as e:
                why = e.strerror or str(e)
        if time.monotonic() >= deadline:
            from pipeline.common.config import ConfigError  # here: every Ray worker imports this module

            raise ConfigError(
                f"cannot reach the Ray cluster at {address} ({why}, for {timeout_s:.0f} s): start it "
                "(`ray start --head`) or correct --address / RAY_ADDRESS"
            )
        time.sleep(1)


def stop_on_sigterm_as_on_ctrl_c() -> None:
    """SIGTERM (a scheduler stopping the job, `ray job stop`, `timeout`) handled as Ctrl-C: Ray
    Train's own SIGINT handler aborts a run, elsewhere KeyboardInterrupt, and the job ends with
    its one line and Ray shut down. Ray's native handler printed a stack of addresses and left an
    embedded cluster's processes for the next job to clean up. From the main thread only (Python
    allows no other); a SIGINT handler set to ignore is bypassed, a SIGTERM must still stop."""
    if threading.current_thread() is not threading.main_thread():
        return

    def as_ctrl_c(signum: int, frame: FrameType | None) -> None:
        on_ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(on_ctrl_c) and on_ctrl_c is not signal.default_int_handler:
            on_ctrl_c(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, as_ctrl_c)


def joins_cluster(address: str | None) -> bool:
    """True when a job given `address` joins a running cluster (`address` or RAY_ADDRESS, as
    `ray job submit` sets it), False when it starts an embedded one."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def connect(address: str | None = None, local_num_cpus: int | None = None) -> None:
    """Join `address` / RAY_ADDRESS if set, else start a local Ray with `local_num_cpus`
    logical CPUs (None: all of this machine's). No-op if Ray is already initialised here, but
    for this process's garbage-collection thresholds, raised in any case (collect_less_often)."""
    import ray

    collect_less_often()  # a driver imports Ray Train, torch and Ray Data next
    # Progress bars print thousands of lines when stdout is not a TTY (job logs, CI).
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if not ray.is_initialized():
        if joins_cluster(address):
            check_reachable(address or os.environ["RAY_ADDRESS"])
            ray.init(address=address, log_to_driver=True)
        else:
            from pipeline.common.leftovers import EmbeddedClusterRecord, clean_leftovers

            clean_leftovers()  # what a killed job's cluster left (pipeline/common/leftovers.py)
            # address="local": a new instance. Without it Ray joins any cluster it finds in
            # /tmp/ray/ray_current_cluster, e.g. another user's or another test's on this machine.
            with environ_defaults(EMBEDDED_RAYLET_ENV):  # the raylet starts inside ray.init
                ray.init(
                    address="local",
                    num_cpus=local_num_cpus,
                    include_dashboard=False,
                    log_to_driver=True,
                    runtime_env={
                        "worker_process_setup_hook": WORKER_SETUP_HOOK,
                        # The job's --verbose, for every process's logs (pipeline/common/logs.py).
                        "env_vars": {k: os.environ[k] for k in (VERBOSE_ENV, RAY_DATA_LOGGING_ENV) if k in os.environ},
                    },
                )
            EmbeddedClusterRecord()  # this cluster's processes, for the next job if this one is killed
        stop_on_sigterm_as_on_ctrl_c()  # after ray.init, whose native handler it replaces
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


# Ray Train's loggers whose warnings, on an embedded (one-node, dashboard-less) cluster, only say
# something harmless, each on the job's console; their errors still show. A filter on the logger,
# not its level: Ray Train's controller configures the "ray.train" logger when it starts (after
# this hook), and logging.config resets the levels of the loggers below it, not their filters.
QUIET_RAY_LOGGERS = (
    # The placement-group cleaner polls Ray's State API, which the dashboard serves and this
    # cluster goes without: a warning every second (harmless: the group is freed when the job ends).
    "ray.train.v2._internal.execution.controller.placement_group_cleaner",
    # The controller registers its workers' resources with Ray Data's autoscaling coordinator,
    # which only an autoscaler reads. On a loaded machine that actor starts late (over Ray's 5 s),
    # and the controller logged a traceback that it calls safe to ignore (seen with 3 test
    # processes on 2 cores: the Ctrl-C test found "Traceback" in the job's output).
    "ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",
)


def errors_only(record: logging.LogRecord) -> bool:
    """A logging filter that keeps ERROR and above."""
    return record.levelno >= logging.ERROR


def setup_worker() -> None:
    """Worker setup hook of the embedded cluster.

    - Ray Data's scheduling delays (pipeline/common/ray_data_tuning.py) in the workers too: Ray Train's
      SplitCoordinator actor runs training's reads. They are set when a process imports Ray Data's
      executor, not here: importing it in the hook cost every Ray process ~1.3 CPU-s on 2 cores,
      and most (idle workers, Ray Train's own actors) never execute a dataset.
    - Quiet logs (pipeline/common/logs.py) in every process, Ray Train's controller and Ray Data's
      coordinators included: the training workers and scoring actors also set them up themselves,
      on any cluster.
    - RAY_ADDRESS names this cluster in its own processes: Ray Train's placement-group cleaner
      looks its cluster up by address, and with several Ray instances on one machine (two
      jobs, the test suite) the lookup without one failed and crashed its thread, with a
      traceback on the job's console.
    - Ray Train's warnings that are noise on this cluster are left out (QUIET_RAY_LOGGERS)."""
    import ray
    import wrapt

    from pipeline.common.logs import configure_worker_process
    from pipeline.common.ray_data_tuning import EXECUTOR_STATE_MODULE, shorten_scheduling_delays

    collect_less_often()  # before the task's or actor's own imports (Ray runs this hook first)
    configure_worker_process()
    if ray.is_initialized():  # a Ray worker process is (the hook's unit test calls it without Ray)
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    # Runs at once if the module is imported already.
    wrapt.register_post_import_hook(lambda _module: shorten_scheduling_delays(), EXECUTOR_STATE_MODULE)
    for name in QUIET_RAY_LOGGERS:
        logging.getLogger(name).addFilter(errors_only)
