"""The training job's own checks: config errors name the key, a directory that is not an export
is refused (tests/integration/test_train_job.py runs the job)."""

from __future__ import annotations

import pytest

from pipeline.common.config import ConfigError
from pipeline.train.config import load_config
from pipeline.train.export import ExportError, load_export


def test_config_errors_name_the_key(repo_root):
    with pytest.raises(ConfigError, match=r"train\.bogus"):
        load_config(repo_root / "configs/jobs/train_local.yaml", ["train.bogus=1"])
    with pytest.raises(ConfigError, match=r"loss_weights"):
        load_config(repo_root / "configs/jobs/train_local.yaml", ["train.loss_weights=[1.0]"])


def test_load_export_rejects_a_directory_that_is_not_one(tmp_path):
    with pytest.raises(ExportError, match="not an exported model"):
        load_export(str(tmp_path))


def test_generated_root_of_other_settings_is_refused(repo_root, tmp_path):
    import json

    from pipeline.data.synthetic import write_file
    from pipeline.train.launch import GENERATED_FILE, ensure_data

    root = tmp_path / "data"
    write_file(str(root / "dt=2026-01-01" / "part-00000.parquet"), 2000, seed=0, day_index=0, file_index=0)
    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", [f"data.root={root}"])
    assert cfg.data.generate is not None
    (root / GENERATED_FILE).write_text(json.dumps({**cfg.data.generate.model_dump(mode="json"), "num_users": 5}))
    with pytest.raises(ConfigError, match=rf"{root}.*num_users.*5.*{cfg.data.generate.num_users}"):
        ensure_data(cfg)
    # The same settings: the logs are used as they are (nothing generated, nothing removed).
    (root / GENERATED_FILE).write_text(json.dumps(cfg.data.generate.model_dump(mode="json")))
    ensure_data(cfg)
    assert [p.name for p in root.glob("dt=*/*.parquet")] == ["part-00000.parquet"]


@pytest.mark.parametrize(
    ("overrides", "resources", "wanting"),
    [
        ([], {"CPU": 4.0}, []),  # the demo: 2 x 0.5 CPUs, 3 left for the reads
        (["cluster.cpus_per_worker=1.5"], {"CPU": 4.0}, []),  # exactly one CPU left
        (["cluster.cpus_per_worker=1.75"], {"CPU": 4.0}, ["take 3.5 CPUs", "the cluster has 4 "]),
        (["cluster.cpus_per_worker=4"], {"CPU": 4.0}, ["take 8 CPUs", "the cluster has 4 "]),
        (["cluster.use_gpu=true"], {"CPU": 16.0, "GPU": 1.0}, ["take 2 GPUs", "cluster.use_gpu=false"]),
    ],
)
def test_a_cluster_that_cannot_run_the_workers_and_the_reads_is_refused_or_awaited(
    overrides, resources, wanting, repo_root, monkeypatch, capsys
):
    """Measured: with every CPU taken by the workers, or half a CPU left, Ray Data's reads never
    started and the job hung after "2 workers started", without a word."""
    from pipeline.train.launch import _prepare

    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", overrides)
    _check_fit(monkeypatch, resources)
    refused = _refused(lambda: _prepare(cfg, None), wanting)
    joined = _refused(lambda: _prepare(cfg, "127.0.0.1:6379"), [])  # a cluster that may grow: said, then awaited
    said = capsys.readouterr().out
    assert refused == bool(wanting) and not joined
    assert said.startswith("[train] waiting for the cluster to grow") if wanting else said == ""
    assert all(part in said for part in wanting)


@pytest.mark.parametrize(
    ("overrides", "resources", "wanting"),
    [
        ([], {"CPU": 2.0}, []),  # 2 actors of 0.5 CPU (configs/jobs/score_local.yaml), 1 CPU left
        (["num_actors=3"], {"CPU": 2.0}, ["the 3 actors take 1.5 CPUs (num_actors x cpus_per_actor)"]),
        (["gpus_per_actor=1"], {"CPU": 8.0}, ["take 2 GPUs (gpus_per_actor), but the cluster has 0"]),
    ],
)
def test_scoring_actors_the_cluster_cannot_hold_are_refused_or_awaited(
    overrides, resources, wanting, repo_root, monkeypatch
):
    """Measured: 3 or 4 actors of 0.5 CPU on 2 CPUs (half a CPU, or none, left for the reads) never
    scored a row, and the job waited without a word."""
    from pipeline.score.config import load_score_config
    from pipeline.score.run import score

    said: list[str] = []
    cfg = load_score_config(repo_root / "configs/jobs/score_local.yaml", overrides)
    _check_fit(monkeypatch, resources)
    monkeypatch.setattr("pipeline.score.run.plan_scoring", lambda *a, **k: type("Plan", (), {"rows_pending": 1}))
    monkeypatch.setattr("pipeline.score.run.run_scoring", _stop)
    run = lambda address: score("m", "i", "o", cfg, address=address, log=said.append)
    assert _refused(lambda: run(None), wanting) == bool(wanting) and not _refused(lambda: run("127.0.0.1:1"), [])
    assert (said == []) if not wanting else said[0].startswith("[score] waiting for the cluster to grow")


def _check_fit(monkeypatch, resources: dict) -> None:
    """Ray replaced by `resources`: connecting does nothing, and nothing past the check runs."""
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr("pipeline.common.ray_cluster.connect", lambda *a, **k: None)
    monkeypatch.setattr("pipeline.train.launch.connect_ray", lambda *a, **k: None)
    monkeypatch.setattr("pipeline.train.launch.ensure_data", _stop)


class _Past(Exception):
    """Raised where the job would go on past the check."""


def _stop(*args, **kwargs):
    raise _Past


def _refused(job, wanting: list[str]) -> bool:
    """True if `job` raised the ConfigError naming every part of `wanting`; False if it went on."""
    try:
        job()
    except _Past:
        return False
    except ConfigError as err:
        assert all(part in str(err) for part in wanting) and str(err).endswith("the job would wait forever"), err
        return True
    raise AssertionError("the job neither stopped at the check nor went past it")


def test_a_run_that_another_job_trains_is_refused_until_it_ends(tmp_path):
    """A second job of the same output_dir and name would resume from the first one's
    checkpoints while the first deletes them (measured: a FileNotFoundError per restart, exit 1)."""
    import os

    from pipeline.common.errors import InUseError
    from pipeline.train.run_lock import RunInUseError, empty_run, hold_run

    run = tmp_path / "runs" / "ple-local"
    with hold_run(run):
        refused = rf"^run {run} is being trained by another job \(pid {os.getpid()} on "
        with pytest.raises(RunInUseError, match=refused), hold_run(run):
            pass
        assert (run / ".lock").is_file()
    with hold_run(run):  # released when the first job's block ends
        (run / "step_00000010").mkdir()
        (run / "checkpoint_manager_snapshot.json").write_text("{}")
        empty_run(run)  # a run group starts afresh, under its lock
        assert [p.name for p in run.iterdir()] == [".lock"]
        with pytest.raises(RunInUseError):
            hold_run(run).__enter__()
    assert issubclass(RunInUseError, InUseError)  # a job exits 75 (pipeline/common/errors.py)
