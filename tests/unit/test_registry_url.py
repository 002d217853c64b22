"""The model registry at a URL of an fsspec filesystem (a local path or any fsspec URL).
memory:// stands in for an object store: it has no rename, so versions are committed by their
version.json uploaded last, the pointer is one object replaced whole, and the lock is an
exclusive create (tests/integration/test_retrain_url_registry.py retrains on a file:// one)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from pipeline.registry.lock import FsspecLock, LockHeldError
from pipeline.registry.store import fetched_copy
from pipeline.registry.versions import Registry, RegistryError, resolve_model_ref
from pipeline.train.export import ExportError


def _memory_registry() -> Registry:
    return Registry(f"memory://reg-{uuid.uuid4().hex[:8]}").ensure()


def registry_objects(reg: Registry) -> dict[str, str]:
    """Every object of the registry and its content hash (the lock excluded)."""
    fs = reg.store.fs
    prefix = fs._strip_protocol(reg.root)
    out = {}
    for path in fs.find(reg.root):
        rel = fs._strip_protocol(path)[len(prefix) :].lstrip("/")
        if not rel.startswith(".retrain.lock"):
            out[rel] = hashlib.sha256(fs.cat_file(path)).hexdigest()
    return out


def _publish_dummy(reg: Registry, promote: bool, before_commit=None, **record):
    vid = reg.next_version_id()
    staged = reg.stage(vid)
    Path(staged, "export").mkdir()
    Path(staged, "export", "dense.safetensors").write_bytes(os.urandom(64))
    Path(staged, "checkpoint", "sub").mkdir(parents=True)
    Path(staged, "checkpoint", "sub", "shard.distcp").write_bytes(os.urandom(32))
    return reg.publish(
        staged, vid, {"train_days": ["a", "b"], "eval_day": "c", **record}, promote=promote, before_commit=before_commit
    )


def test_registry_at_a_url_commits_by_version_json_and_recovers(monkeypatch):
    reg = _memory_registry()
    v1 = _publish_dummy(reg, promote=True)
    _publish_dummy(reg, promote=False, decision="rejected", reason="worse")
    assert v1.path.startswith("memory://") and v1.export_dir == f"{v1.path}/export"
    assert [(v.id, v.status) for v in reg.versions()] == [("v0001", "production"), ("v0002", "rejected")]
    assert reg.get("v0002").record["reason"] == "worse"
    before = registry_objects(reg)
    assert "versions/v0001/checkpoint/sub/shard.distcp" in before and "production" in before

    # Killed half-way through the upload: files are there, version.json is not.
    def killed():
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        _publish_dummy(reg, promote=True, before_commit=killed)
    assert "versions/v0003/export/dense.safetensors" in registry_objects(reg)
    assert [v.id for v in reg.versions()] == ["v0001", "v0002"] and reg.production().id == "v0001"
    assert reg.recover(log=lambda m: None) == ["versions/v0003 (upload interrupted before its version.json)"]
    assert registry_objects(reg) == before

    # Killed between the commit and the pointer switch: listed as incomplete, then removed.
    monkeypatch.setattr(reg, "set_production", lambda *a, **k: killed())
    with pytest.raises(KeyboardInterrupt):
        _publish_dummy(reg, promote=True)
    monkeypatch.undo()
    assert reg.get("v0003").status == "incomplete"
    assert reg.recover(log=lambda m: None) == ["versions/v0003 (promotion interrupted before the pointer switch)"]
    assert registry_objects(reg) == before

    # A rollback, and references that scoring resolves.
    _publish_dummy(reg, promote=True)
    reg.set_production("v0001", by="manual", note="rollback")
    assert [v.status for v in reg.versions()] == ["production", "rejected", "retired"]
    assert resolve_model_ref(f"{reg.root}@production") == v1.export_dir
    assert resolve_model_ref(f"{reg.root}@v0003") == reg.get("v0003").export_dir


def test_fetched_copy_is_the_version_tree_and_is_reused(tmp_path):
    reg = _memory_registry()
    v = _publish_dummy(reg, promote=True)
    local = fetched_copy(v.checkpoint_dir, "checkpoint", cache_root=str(tmp_path))
    remote = reg.store.fs.cat_file(f"{v.checkpoint_dir}/sub/shard.distcp")
    assert Path(local, "sub", "shard.distcp").read_bytes() == remote
    assert fetched_copy(v.checkpoint_dir, "checkpoint", cache_root=str(tmp_path)) == local
    assert [p.name for p in tmp_path.rglob("*.part-*")] == []  # no temporary download left


def test_lock_at_a_url_is_exclusive_and_takes_over_only_stale_locks():
    fs, _ = fsspec.core.url_to_fs("memory://")
    path = f"memory://lock-{uuid.uuid4().hex[:8]}/.retrain.lock"
    with FsspecLock(fs, path, stale_after_s=60) as lock:
        assert json.loads(fs.cat_file(path))["token"] == lock.token
        with pytest.raises(LockHeldError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
            FsspecLock(fs, path, stale_after_s=60).acquire()
    assert not fs.exists(path)

    def plant(beat_age_s: float) -> None:
        fs.pipe_file(
            path,
            json.dumps(
                {
                    "pid": 1,
                    "host": "other-host",
                    "started": time.time() - 999,
                    "token": "x",
                    "beat": time.time() - beat_age_s,
                }
            ).encode(),
        )

    plant(beat_age_s=5)  # another host's live lock
    with pytest.raises(LockHeldError, match="other-host"):
        FsspecLock(fs, path, stale_after_s=60).acquire()
    plant(beat_age_s=300)  # its heartbeat stopped long ago
    logs = []
    with FsspecLock(fs, path, stale_after_s=60, log=logs.append):
        assert json.loads(fs.cat_file(path))["pid"] == os.getpid()
    assert any("took over stale lock" in m and "no heartbeat" in m for m in logs), logs


def test_heartbeat_rewrites_the_beat_of_its_own_lock_only():
    fs, _ = fsspec.core.url_to_fs("memory://")
    path = f"memory://lock-{uuid.uuid4().hex[:8]}/.retrain.lock"
    with FsspecLock(fs, path, stale_after_s=60, heartbeat_s=0.05):
        first = json.loads(fs.cat_file(path))["beat"]
        time.sleep(0.5)
        assert json.loads(fs.cat_file(path))["beat"] > first


def test_a_url_whose_filesystem_cannot_be_opened_is_a_clear_error():
    with pytest.raises(RegistryError, match=r"registry nosuchfs://reg: cannot open its filesystem: .*nosuchfs"):
        Registry("nosuchfs://reg")
    with pytest.raises(ExportError, match=r"model 'nosuchfs://reg@production': registry nosuchfs://reg"):
        resolve_model_ref("nosuchfs://reg@production")


def test_a_registry_that_no_retrain_made_is_named_as_missing(tmp_path):
    reg = _memory_registry()
    _publish_dummy(reg, promote=True)
    assert Registry(reg.root).existing().production().id == "v0001"  # an object store has no directories
    with pytest.raises(RegistryError, match=r"no registry at memory://typo-reg \(no memory://typo-reg/versions"):
        Registry("memory://typo-reg").existing()
    with pytest.raises(RegistryError, match=f"no registry at {tmp_path}/typo"):
        Registry(str(tmp_path / "typo")).existing()
    (tmp_path / "file").write_text("")  # a registry root below a file cannot be made
    with pytest.raises(
        RegistryError, match=f"registry {tmp_path}/file/reg: cannot create {tmp_path}/file/reg/versions"
    ):
        Registry(str(tmp_path / "file" / "reg")).ensure()
