"""Shared pytest fixtures. Keep generic: any test module may use them."""

import os

# One intra-op thread in the test processes (set before anything imports torch): `make test` runs
# two pytest processes on 2 cores beside Ray's workers (which Ray already gives one thread each),
# so a second thread only waits for a core; OpenMP's spinning while it waits costs CPU time the
# other process needs (the unit tests: ~18 % less CPU, the same wall time).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every Ray cluster the tests start (the session's, and through the environment the jobs' embedded
# ones) keeps an idle worker for the next task for up to 10 minutes. Ray's default kills a worker
# idle for 1 s once more workers than CPUs live, which is always beside Ray Train's actors, so each
# task of Ray Data (the Parquet sampling every read starts, the reads) paid a Python start and
# Ray's imports, ~1.9 CPU-s on 2 cores, more than the task itself. A raylet setting (RayConfig
# reads RAY_<name>): the whole suite started 350 Ray processes and used 1,220 CPU-s before, 299 and
# 1,112 after; at most 42 Ray workers lived at once instead of 31 (~100 MB private memory each).
os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "600000")

from pathlib import Path

import pytest

from helpers.suite_order import order_items
from pipeline.common.ray_cluster import EMBEDDED_RAYLET_ENV, collect_less_often

collect_less_often()  # this process imports torch, torchrec and Ray Train too (pipeline/common/ray_cluster.py)
REPO_ROOT = Path(__file__).resolve().parents[1]
# CI clones the repo next to a copy of shared/, so the samples live beside the repo root.
SAMPLES_DIR = REPO_ROOT.parent / "shared" / "data" / "samples"

# Ray Data progress bars flood logs when stdout is not a TTY.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_local():
    """A small local Ray instance for the whole session (reused if one is already running)."""
    import ray

    started = not ray.is_initialized()
    if started:
        # address="local": never join another process's cluster found via
        # /tmp/ray/ray_current_cluster (e.g. a concurrent test's ray.cluster_utils.Cluster).
        with pytest.MonkeyPatch.context() as env:  # for the cluster's processes only, not the jobs tests start
            # No log goes to the driver (log_to_driver=False), yet Ray's log monitor lists the log
            # folder 10 times a second while it holds under this many files; with 0, every 0.5 s
            # (LOG_NAME_UPDATE_INTERVAL_S): 2.5 -> 1.4 CPU-s a minute beside 300 worker logs.
            env.setenv("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")
            for name, value in EMBEDDED_RAYLET_ENV.items():  # as a job's embedded cluster has them
                env.setenv(name, value)
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                object_store_memory=1 << 30,
                # The embedded cluster's garbage-collection thresholds, without the rest of its hook.
                runtime_env={"worker_process_setup_hook": "pipeline.common.ray_cluster.collect_less_often"},
            )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(
            f"public CSV samples not found at {SAMPLES_DIR} (expected shared/data/samples beside the repository root)"
        )
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def stock_delays(monkeypatch):
    """Ray Data's own scheduling delays back for the test (pipeline/common/ray_data_tuning.py
    lowers them), restored after it."""
    from ray.data._internal.execution import resource_manager, streaming_executor_state

    monkeypatch.setattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", 0.1)
    monkeypatch.setattr(resource_manager.ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", 1)
    return streaming_executor_state, resource_manager.ResourceManager


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heaviest files first (helpers/suite_order.py), then the rest in collection order."""
    order_items(items)
