"""Ray Train settings that it reads from the driver's environment when a run starts (its
controller actor gets a copy): set for the run, restored after it. A value already in the
environment (exported by the user) wins."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.train.config import ClusterConfig

HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # see ClusterConfig.health_check_interval_s
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def watch_preemptions(address: str | None, env: Mapping[str, str], alive_nodes: int) -> bool:
    """Whether a run starts Ray Train's preemption watcher: an actor per run (~1.4 s of CPU to
    start on 2 cores) that polls for draining nodes, so that a worker lost to a preempted node
    does not count against `cluster.max_failures`. On a local one-node Ray (the embedded
    default, a workstation, the tests' instance) there is no other node to go on with when the
    only one is drained: off there. On a cluster joined by address (`ray job submit` sets
    RAY_ADDRESS), or with several nodes, on, as Ray's default."""
    return bool(address or env.get("RAY_ADDRESS")) or alive_nodes > 1


def ray_train_settings(cluster: ClusterConfig, address: str | None) -> dict[str, str]:
    """The environment variables a run on the connected Ray cluster is started with."""
    import ray

    alive = sum(1 for node in ray.nodes() if node["Alive"])
    return {
        HEALTH_CHECK_ENV: str(cluster.health_check_interval_s),
        PREEMPTION_WATCHER_ENV: "1" if watch_preemptions(address, os.environ, alive) else "0",
    }
