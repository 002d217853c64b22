"""Shorter scheduling delays in Ray Data's streaming executor (Ray 2.60), for the training reads
(pipeline/data/files.py read_days): in the process that iterates the dataset and, through the
embedded cluster's worker setup hook, in the workers (Ray Train's SplitCoordinator actor runs
training's reads).

Two fixed delays of the executor idled half of a 2-core machine (measured with
benchmarks/bench_reader.py and ray.timeline(), 16 files of 1M rows):
- Its loop waits for *all* running tasks, up to WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = 0.1 s,
  before it sees that one has finished (ray.wait with num_returns=len(active_tasks)). Since its
  resource budget allows only as many tasks as CPUs, a finished task's CPU stayed idle for up to
  0.1 s: the 0.15 s read tasks ran one at a time. Upstream: ray-project/ray#45934.
- It learns the cluster's resources from the autoscaling coordinator, cached for
  GLOBAL_LIMITS_UPDATE_INTERVAL_S = 1 s, and sees zero resources until the first refresh: the
  first second of every execution (every epoch) ran one task at a time.
Ray Data alone (blocks, no collate) read the 16M rows in 2.2-2.5 s; with 0.01 s / 0.1 s, 1.7 s;
the whole reader went from 0.59 to 0.71 of a plain pyarrow scan (0.02 s / 0.2 s, medians of 4
interleaved runs). A driver whose consumer is slow (executor mostly waiting) used no more CPU
with the shorter delays, and training (benchmarks/bench_train.py, the demo job) ran as before.

Not for scoring (pipeline/score/run.py): its actors are the bottleneck, its rows/s did not change
(benchmarks/bench_score.py with 25k-row files, 2 runs each way), and with more read tasks
ahead each actor mapped more of the object store, so its peak RSS grew with the input (1.1x ->
1.65x from N to 10N rows).

Both are private constants, so this checks they still exist and otherwise logs and leaves Ray
as it is (tests/unit/test_ray_data_tuning.py fails on a Ray that renamed them). Setting
RAY_DATA_STOCK_DELAYS=1 in the environment (of the job, and of the cluster's workers) keeps Ray's
own values, e.g. to compare.
"""

from __future__ import annotations

import contextlib
import logging
import os

logger = logging.getLogger(__name__)

TASK_COMPLETION_WAIT_S = 0.02
GLOBAL_LIMITS_REFRESH_S = 0.2
STOCK_DELAYS_ENV = "RAY_DATA_STOCK_DELAYS"
RAY_DEFAULTS = (0.1, 1)  # Ray 2.60's values of both
# The executor's module: Ray Data imports it when a dataset first executes, not with `import ray.data`.
EXECUTOR_STATE_MODULE = "ray.data._internal.execution.streaming_executor_state"


def _knobs():
    """(the executor-state module, ResourceManager) holding both delays, or None (logged) if
    this Ray has no such constants."""
    try:
        from ray.data._internal.execution import resource_manager, streaming_executor_state
    except ImportError as e:
        logger.warning("Ray Data scheduling delays left as they are: %s", e)
        return None
    manager = resource_manager.ResourceManager
    if not (
        hasattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S")
        and hasattr(manager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S")
    ):
        logger.warning(
            "Ray Data scheduling delays left as they are: this Ray has no "
            "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S / GLOBAL_LIMITS_UPDATE_INTERVAL_S"
        )
        return None
    return streaming_executor_state, manager


def shorten_scheduling_delays() -> bool:
    """Lower both delays (never raise them). True if applied."""
    if os.environ.get(STOCK_DELAYS_ENV) == "1" or (knobs := _knobs()) is None:
        return False
    state, manager = knobs
    state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = min(state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, TASK_COMPLETION_WAIT_S)
    manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = min(manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S, GLOBAL_LIMITS_REFRESH_S)
    return True


@contextlib.contextmanager
def stock_delays():
    """Ray's own values inside the block, in this process (benchmarks compare both)."""
    knobs = _knobs()
    env = os.environ.get(STOCK_DELAYS_ENV)
    os.environ[STOCK_DELAYS_ENV] = "1"
    if knobs is not None:
        state, manager = knobs
        ours = state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S
        state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = RAY_DEFAULTS
    try:
        yield
    finally:
        if knobs is not None:
            state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = ours
        if env is None:
            os.environ.pop(STOCK_DELAYS_ENV)
        else:
            os.environ[STOCK_DELAYS_ENV] = env
