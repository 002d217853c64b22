"""The daily retrain on a registry at a URL: a file:// registry (the fsspec code path, visible to
Ray's worker processes) runs two real retrains, from scratch, then a warm start downloaded from
it (tests/unit/test_registry_url.py covers the URL store itself on memory://)."""

from __future__ import annotations

from pipeline.registry.store import FsspecStore
from pipeline.registry.versions import Registry


# -- two real retrains on a file:// registry ------------------------------------------------------
def test_retrain_on_a_url_registry_warm_starts_from_a_downloaded_checkpoint(
    ray_local, tmp_path, repo_root, monkeypatch
):
    from helpers.retrain_days import attempt_dirs, write_day
    from pipeline.retrain.config import load_retrain_config
    from pipeline.retrain.daily import retrain
    from pipeline.score.plan import resolve_model
    from pipeline.train.export import load_export

    monkeypatch.chdir(repo_root)
    monkeypatch.setenv("PLE_REGISTRY_CACHE", str(tmp_path / "cache"))
    url = f"file://{tmp_path}/registry"
    cfg = lambda: load_retrain_config(
        "configs/jobs/retrain_local.yaml",
        [
            f"retrain.registry={url}",
            f"output_dir={tmp_path}/runs",
            f"data.root={tmp_path}/data",
            "retrain.default_tolerance={max_auc_drop: 1.0}",
            "retrain.tolerance={}",
            "train.batch_size=512",
            "cluster.num_workers=1",
            "cluster.max_failures=0",
        ],
    )
    for day in (0, 1):
        write_day(tmp_path / "data", day, rows=6000)
    first = retrain(cfg(), log=lambda m: None)
    assert (first.status, first.version) == ("promoted", "v0001")
    write_day(tmp_path / "data", 2, rows=6000)
    second = retrain(cfg(), log=lambda m: None)
    assert (second.status, second.version) == ("promoted", "v0002")

    reg = Registry(url)
    assert isinstance(reg.store, FsspecStore) and [v.status for v in reg.versions()] == ["retired", "production"]
    record = reg.get("v0002").record
    assert record["parent"] == "v0001" and record["warm_start"] is True
    # The warm start read the checkpoint downloaded into the attempt's directory.
    config = (tmp_path / "registry" / "versions" / "v0002" / "config.yaml").read_text()
    assert "/production/checkpoint" in config
    assert not (tmp_path / "registry" / ".retrain.lock").exists()
    assert not attempt_dirs(tmp_path / "runs")  # attempts (and their downloads) cleaned up

    # Scoring's model reference: a local copy of the production export, loadable.
    local, source = resolve_model(f"{url}@production")
    assert source == reg.get("v0002").export_dir and local.startswith(str(tmp_path / "cache"))
    model, spec, meta = load_export(local)
    assert meta["registry"] == {"root": url, "version": "v0002"}
