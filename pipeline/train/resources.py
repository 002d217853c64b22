"""Whether the Ray cluster can run the training workers and, beside them, Ray Data's reads.

Ray Train waits for its workers' resources without a word, and Ray Data's read tasks (1 CPU
each) wait for a CPU the workers leave free: a request the cluster cannot meet hung the job
forever with nothing on the console. An embedded cluster cannot grow, so the job refuses such a
request before it starts; a cluster the job joins may grow (an autoscaler adding nodes), so the
job says what it waits for and goes on."""

from __future__ import annotations

from pipeline.common.config import ConfigError
from pipeline.train.config import ClusterConfig

READ_TASK_CPUS = 1.0  # Ray Data's default for a read task


def shortfalls(cluster: ClusterConfig, resources: dict[str, float]) -> list[str]:
    """What `cluster` (the workers' request) needs beyond `resources` (ray.cluster_resources()),
    each with what to change in the config."""
    found = []
    cpus, workers = resources.get("CPU", 0.0), cluster.num_workers
    taken = workers * cluster.cpus_per_worker
    if taken + READ_TASK_CPUS > cpus:
        found.append(
            f"the {workers} workers take {taken:g} CPUs (cluster.num_workers x cluster.cpus_per_worker) and "
            f"Ray Data's reads need {READ_TASK_CPUS:g} more beside them, but the cluster has {cpus:g} "
            "(lower cluster.cpus_per_worker or cluster.num_workers, or on the embedded cluster raise "
            "cluster.local_num_cpus)"
        )
    gpus = resources.get("GPU", 0.0)
    if cluster.use_gpu and workers > gpus:
        found.append(
            f"the {workers} workers take a GPU each (cluster.use_gpu), but the cluster has {gpus:g} "
            "(lower cluster.num_workers, or train on CPUs: cluster.use_gpu=false)"
        )
    return found


def check_cluster_fits(cluster: ClusterConfig, embedded: bool) -> None:
    """Refuse (ConfigError) a request the embedded cluster cannot meet; on a joined cluster,
    print what the run will wait for."""
    import ray

    found = shortfalls(cluster, ray.cluster_resources())
    if not found:
        return
    if embedded:
        raise ConfigError(f"{'; '.join(found)}: the run would wait forever")
    print(f"[train] waiting for the cluster to grow (an autoscaler adding nodes): {'; '.join(found)}", flush=True)
