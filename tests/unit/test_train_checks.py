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
        (["cluster.use_gpu=true"], {"CPU": 16.0, "GPU": 1.0}, ["take a GPU each", "the cluster has 1 "]),
    ],
)
def test_a_cluster_that_cannot_run_the_workers_and_the_reads_is_refused_or_awaited(
    overrides, resources, wanting, repo_root, monkeypatch, capsys
):
    """Measured: with every CPU taken by the workers, or half a CPU left, Ray Data's reads never
    started and the job hung after "2 workers started", without a word."""
    import ray

    from pipeline.train.resources import check_cluster_fits

    cluster = load_config(repo_root / "configs/jobs/train_local.yaml", overrides).cluster
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    if not wanting:
        check_cluster_fits(cluster, embedded=True)
        check_cluster_fits(cluster, embedded=False)
        assert capsys.readouterr().out == ""
        return
    with pytest.raises(ConfigError) as refused:
        check_cluster_fits(cluster, embedded=True)
    assert all(part in str(refused.value) for part in wanting) and str(refused.value).endswith("would wait forever")
    check_cluster_fits(cluster, embedded=False)  # a cluster that may grow: said, then awaited
    said = capsys.readouterr().out
    assert said.startswith("[train] waiting for the cluster to grow") and all(part in said for part in wanting)
