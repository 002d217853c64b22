"""Whether the Ray cluster can hold a job's long-lived processes (training workers, scoring
actors) and, beside them, Ray Data's reads.

Ray waits for resources without a word: training workers or scoring actors asking for more
than the cluster has, or leaving Ray Data's read tasks (1 CPU each) no whole CPU beside them,
hung the job forever with nothing on the console (measured with both jobs: every CPU taken, or
half a CPU left). An embedded cluster cannot grow, so the
job refuses such a request before it starts; a cluster the job joins may grow (an autoscaler
adding nodes), so the job says what it waits for and goes on."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.config import ConfigError

READ_TASK_CPUS = 1.0  # Ray Data's default for a read task


@dataclass(frozen=True)
class Request:
    """`count` processes of `cpus` and `gpus` each, and the config keys that set them."""

    what: str  # "workers", "actors"
    count: int
    cpus: float
    gpus: float
    count_key: str
    cpus_key: str
    gpus_key: str
    fewer_gpus: str  # how to ask for fewer GPUs: "cluster.use_gpu=false", "a lower gpus_per_actor"
    local_cpus_key: str  # the embedded cluster's CPUs


def shortfalls(request: Request, resources: dict[str, float]) -> list[str]:
    """What `request` needs beyond `resources` (ray.cluster_resources()), each with what to change."""
    r, found = request, []
    cpus, taken = resources.get("CPU", 0.0), request.count * request.cpus
    if taken + READ_TASK_CPUS > cpus:
        found.append(
            f"the {r.count} {r.what} take {taken:g} CPUs ({r.count_key} x {r.cpus_key}) and Ray Data's reads "
            f"need {READ_TASK_CPUS:g} more beside them, but the cluster "
            f"has {cpus:g} (lower {r.cpus_key} or {r.count_key}, or on the embedded cluster raise {r.local_cpus_key})"
        )
    gpus, wanted = resources.get("GPU", 0.0), request.count * request.gpus
    if wanted > gpus:
        found.append(
            f"the {r.count} {r.what} take {wanted:g} GPUs ({r.gpus_key}), but the cluster has {gpus:g} "
            f"(lower {r.count_key}, or {r.fewer_gpus})"
        )
    return found


def check_cluster_fits(request: Request, address: str | None, log=print) -> None:
    """After connecting with `address`: refuse (ConfigError) a request the embedded cluster
    cannot meet; on a joined cluster (pipeline/common/ray_cluster.joins_cluster), say what the
    job will wait for."""
    import ray

    from pipeline.common.ray_cluster import joins_cluster

    found = shortfalls(request, ray.cluster_resources())
    if not found:
        return
    if not joins_cluster(address):
        raise ConfigError(f"{'; '.join(found)}: the job would wait forever")
    log(f"waiting for the cluster to grow (an autoscaler adding nodes): {'; '.join(found)}")
