"""pipeline/common/ray_data_tuning.py with Ray running: training's reads wait for tasks with our
timeout, a fresh interpreter's Ray has the defaults the tuning assumes, and the worker hook
sets them when a process imports the executor."""

import os
import sys

from pipeline.common import ray_data_tuning


def test_training_reads_wait_for_tasks_with_our_timeout(ray_local, stock_delays, monkeypatch, tmp_path, repo_root):
    """read_days applies the tuning, and the executor reads the module constant at call time (a
    Ray that copied it elsewhere would make the tuning a silent no-op): record the timeouts of
    the ray.wait calls of its task-completion step (other parts of Ray Data wait on other things
    with 0.1 s too)."""
    import pyarrow.parquet as pq

    from pipeline.data.feature_spec import load_spec
    from pipeline.data.files import read_days
    from pipeline.data.synthetic import generate_table

    spec = load_spec(repo_root / "configs" / "features" / "synthetic.yaml")
    (tmp_path / "dt=2024-03-01").mkdir()
    for f in range(3):
        pq.write_table(generate_table(500, seed=1, stream=(0, f)), tmp_path / "dt=2024-03-01" / f"part-{f}.parquet")
    timeouts = []
    real_wait = ray_local.wait

    def recording_wait(*args, **kwargs):
        if sys._getframe(1).f_code.co_name == "process_completed_tasks":
            timeouts.append(kwargs.get("timeout"))
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(ray_local, "wait", recording_wait)
    assert read_days(str(tmp_path), "2024-03-01", "2024-03-01", spec).count() == 1500
    assert timeouts and set(timeouts) == {ray_data_tuning.TASK_COMPLETION_WAIT_S}


def test_ray_defaults_are_the_pinned_rays_own():
    import subprocess

    code = (
        "from ray.data._internal.execution import resource_manager as m, streaming_executor_state as s;"
        "print(s.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, m.ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert tuple(float(v) for v in out) == ray_data_tuning.RAY_DEFAULTS


def test_the_worker_hook_sets_the_delays_when_the_executor_is_imported_not_before():
    """The embedded cluster's worker hook imports no Ray Data executor (most Ray processes never
    run one, and importing it cost each ~1.3 CPU-s); a process that then imports it has our delays."""
    import subprocess

    from pipeline.common.ray_cluster import WORKER_SETUP_HOOK

    module, name = WORKER_SETUP_HOOK.rsplit(".", 1)
    code = (
        f"import sys, importlib; importlib.import_module({module!r}).{name}();"
        f"print({ray_data_tuning.EXECUTOR_STATE_MODULE!r} in sys.modules, 'ray.data' in sys.modules);"
        "from ray.data._internal.execution import resource_manager as m, streaming_executor_state as s;"
        "print(s.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, m.ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S)"
    )
    env = {k: v for k, v in os.environ.items() if k != ray_data_tuning.STOCK_DELAYS_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    before, after = out.splitlines()
    assert before == "False False"
    ours = (ray_data_tuning.TASK_COMPLETION_WAIT_S, ray_data_tuning.GLOBAL_LIMITS_REFRESH_S)
    assert tuple(float(v) for v in after.split()) == ours
