"""The training job on multi-process Ray clusters on this machine, the ways users run it:
two nodes (`ray.cluster_utils.Cluster`), and `ray job submit` to a head started with
`ray start --head`. Each cluster runs in child processes, so the session's `ray_local`
instance in this process is left alone."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from helpers.process_utils import child_env, free_port, stop_tree, wait_for

RAY_CLI = str(Path(sys.executable).with_name("ray"))  # this venv's, like its python
SMALL_RUN = ["data.generate.rows=12000", "train.epochs=1", "train.batch_size=512", "cluster.max_failures=0"]

TWO_NODE_SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from pipeline.train.config import load_config
from pipeline.train.launch import run_training

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
try:
    cfg = load_config("configs/jobs/train_local.yaml", sys.argv[1:])
    result = run_training(cfg, address=cluster.address)
    nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
    print("RESULT " + json.dumps({"metrics": result.metrics, "export": result.export_dir, "node_ips": nodes}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def _http_answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (any status: the head may ask for its token)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _head_state(tmp: Path, head: subprocess.Popen) -> str:
    """Why a head stopped answering, for the failure message: whether `ray start` still runs,
    and the last lines of its own log and of its processes' logs (the directory goes with the test)."""
    logs = tmp / "ray" / "session_latest" / "logs"
    names = ["dashboard.log", "dashboard.err", "raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"]
    parts = [f"`ray start` {'running' if head.poll() is None else f'exited {head.returncode}'}"]
    for path in [*sorted(tmp.glob("head*.log")), *(logs / n for n in names)]:
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-12:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
    return "\n".join(parts)


def test_two_node_cluster_trains_end_to_end(tmp_path, repo_root):
    # STRICT_SPREAD: one training worker per node, so the gloo collectives and the sharded
    # tables really cross processes on different Ray nodes.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            TWO_NODE_SCRIPT,
            f"data.root={tmp_path}/data",
            f"output_dir={tmp_path}/runs",
            "name=two-node",
            "cluster.placement_strategy=STRICT_SPREAD",
            *SMALL_RUN,
        ],
        cwd=repo_root,
        env=child_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["metrics"]["cluster/nodes"] == 2 and result["metrics"]["cluster/workers"] == 2
    assert set(result["node_ips"]) == {"127.0.0.1"}  # the cluster stayed on loopback
    assert result["metrics"]["done"] == 1 and result["metrics"]["val/ctr/count"] == 4000
    assert (Path(result["export"]) / "model.json").is_file()


def _head_command(tmp: Path) -> tuple[list[str], str]:
    """(`ray start --head --block` on loopback, its dashboard's URL). Every port this head listens
    on is a free one: another Ray on the machine (a second test session, a user's) must not make
    this one's job agent fail to bind."""
    dash_port = free_port()
    ports = {
        flag: free_port()
        for flag in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
        )
    }
    command = [
        RAY_CLI,
        "start",
        "--head",
        "--block",
        f"--port={free_port()}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=4",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}",
        f"--temp-dir={tmp}/ray",
        *(f"--{flag}={port}" for flag, port in ports.items()),
    ]
    return command, f"http://127.0.0.1:{dash_port}"


def _start_head(tmp: Path, env: dict, attempts: int = 2) -> tuple[subprocess.Popen, str]:
    """A head that says it is up ("Ray runtime started."), and its dashboard's URL. `ray start`
    gives up and exits when its raylet takes more than 30 s (fixed in ray._private.node) to
    register with the GCS: seen on a 2-core machine running the whole suite, after the dashboard
    had already answered. Such a start is tried again, with new ports; its log is kept."""
    for attempt in range(attempts):
        command, dashboard = _head_command(tmp)
        log_path = tmp / "head.log"
        with open(log_path, "w") as log:  # the child keeps its own copy of the fd
            head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up_or_gone(head: subprocess.Popen = head, log: Path = log_path) -> bool:
            return head.poll() is not None or "Ray runtime started." in log.read_text(errors="replace")

        wait_for(up_or_gone, "the Ray head to start or give up")
        if head.poll() is None:
            return head, dashboard
        log_path.rename(tmp / f"head-attempt{attempt}.log")
    raise AssertionError(f"`ray start --head` exited {attempts} times during start-up:\n{_head_state(tmp, head)}")


def test_ray_job_submit_to_a_head_on_loopback(repo_root):
    """`ray start --head` + `ray job submit --working-dir .`, with Ray's default token auth on."""
    # A short temp dir: Ray's unix socket paths under it must stay below the OS limit.
    tmp = Path(tempfile.mkdtemp(prefix="rayjob-", dir="/tmp"))
    env = child_env(RAY_AUTH_MODE="token")
    head, dashboard = _start_head(tmp, env)
    try:
        # The dashboard's HTTP server first (a cheap poll: each `ray` CLI call costs a second of
        # CPU, taken from the head that is starting), then the Jobs API through the CLI, with token auth.
        wait_for(lambda: _http_answers(f"{dashboard}/api/version"), "the Ray head's dashboard")
        wait_for(
            lambda: (
                subprocess.run(
                    [RAY_CLI, "job", "list", "--address", dashboard], env=env, capture_output=True
                ).returncode
                == 0
            ),
            "the Ray head's Jobs API",
            interval=1.0,
        )
        command = [
            RAY_CLI,
            "job",
            "submit",
            "--address",
            dashboard,
            "--submission-id",  # fixed: a retry below can never start the job twice
            "submitted-train-job",
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "jobs.train",
            "--config",
            "configs/jobs/train_local.yaml",
            f"data.root={tmp}/data",
            f"output_dir={tmp}/runs",
            "name=submitted",
            *SMALL_RUN,
        ]

        def submit():  # the head's job agent starts a little after its Jobs API answers
            done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True)
            # Until it does, the head refuses the job, or (seen twice on a loaded 2-core machine
            # running the whole suite) drops the connection. Had the job been accepted before the
            # drop, the retry would fail with "already exists" (the fixed submission id).
            starting = ("No available agent", "Remote end closed connection without response")
            return None if any(s in done.stderr for s in starting) else done

        submit = wait_for(submit, "a job agent on the head", timeout=120, interval=2.0)
        assert submit.returncode == 0, submit.stdout[-5000:] + submit.stderr[-3000:] + _head_state(tmp, head)
        assert "succeeded" in submit.stdout
        run_dir = tmp / "runs" / "submitted"
        assert (run_dir / "export" / "model.json").is_file() and (run_dir / "export" / "dense.safetensors").is_file()
        checkpoints = sorted(run_dir.glob("step_*"))
        assert checkpoints and (checkpoints[-1] / "extra.json").is_file()
        assert json.loads((checkpoints[-1] / "extra.json").read_text())["world_size"] == 2
    finally:
        # The head's graceful stop waits ~30 s for its idle actors; nothing here depends on it.
        stop_tree(head, grace=5)
