"""The daily retrain on a registry at a URL: a file:// registry (the fsspec code path, visible to
Ray's worker processes) runs two real retrains, from scratch, then a warm start downloaded from
it (tests/unit/test_registry_url.py covers the URL store itself on memory://). Its user and item
tables are managed-collision tables, on days whose catalogue drifts: the retrain reports the ids
each day admitted and evicted, counted against the production version it warm-started from."""

from __future__ import annotations

import re

from pipeline.registry.store import FsspecStore
from pipeline.registry.versions import Registry

USER_ROWS = 128


# -- two real retrains on a file:// registry ------------------------------------------------------
def test_retrain_on_a_url_registry_warm_starts_from_a_downloaded_checkpoint(
    ray_local, tmp_path, repo_root, monkeypatch
):
    from helpers.managed_spec import small_managed_spec
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
            # Fewer user rows than a day's users: the table fills, and eviction makes room.
            f"data.spec={small_managed_spec(tmp_path, user_rows=USER_ROWS)}",
        ],
    )
    for day in (0, 1):
        write_day(tmp_path / "data", day, rows=6000, id_drift=0.3)
    logs: list[str] = []
    first = retrain(cfg(), log=logs.append)
    assert (first.status, first.version) == ("promoted", "v0001")
    [line] = [m for m in logs if m.startswith("[retrain] managed ids since an empty mapping: ")]
    assert f"user: {USER_ROWS - 1} ids admitted, 0 evicted, {USER_ROWS - 1} of {USER_ROWS - 1} rows in use" in line
    write_day(tmp_path / "data", 2, rows=6000, id_drift=0.3)
    logs.clear()
    second = retrain(cfg(), log=logs.append)
    assert (second.status, second.version) == ("promoted", "v0002")
    # Day 2's new users took rows from the coldest of the full table's: as many evicted as admitted.
    [line] = [m for m in logs if m.startswith("[retrain] managed ids since v0001: ")]
    admitted, evicted = re.search(r"user: (\d+) ids admitted, (\d+) evicted", line).groups()
    assert int(admitted) == int(evicted) > 0, line

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
