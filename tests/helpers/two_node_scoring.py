"""Helper of tests/integration/test_score_job.py (not a test module): score on a 2-node local
Ray cluster.

    python tests/helpers/two_node_scoring.py EXPORT INPUT OUTPUT

Starts a head and a worker node (ray.cluster_utils.Cluster), each with two logical CPUs (the
actors take a fraction, Parquet read tasks need a whole one) and one `scorer` resource, runs
the scoring job against the cluster's address with two actors that each need a `scorer` (so
one per node), shuts everything down, and prints one JSON line:
{nodes, rows_scored, actors: [{node, pid, rows, ...}]}.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.score.config import ScoreConfig
    from pipeline.score.run import score

    export, data, out = sys.argv[1:4]
    node = {"num_cpus": 2, "resources": {"scorer": 1}, "object_store_memory": 256 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        cfg = ScoreConfig(
            batch_size=1000,
            num_actors=2,
            cpus_per_actor=0.5,
            torch_threads=1,
            actor_resources={"scorer": 1},
            manifest_every_s=0,
            actor_start_timeout_s=300,
        )
        summary = score(export, data, out, cfg, address=cluster.address, log=lambda m: print(m, file=sys.stderr))
        nodes = len([n for n in ray.nodes() if n["Alive"]])
        print(json.dumps({"nodes": nodes, "rows_scored": summary.rows_scored, "actors": summary.actors}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
