"""The exported model's files: safetensors (no pickle), one per table, streamed from the training
checkpoint with the same tensors, loaded as memory-mapped parameters; format 1 still loads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from helpers.checkpoints import demo_spec, write_checkpoint
from pipeline.train.config import load_config
from pipeline.train.export import ExportError, check_export, content_version, export_model, load_export, write_export


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_streamed_export_equals_the_checkpoint_tensors(tmp_path, repo_root):
    spec = demo_spec()
    state = write_checkpoint(tmp_path / "ckpt", spec)
    export = Path(export_model(str(tmp_path / "ckpt"), str(tmp_path / "export"), metrics={"val/ctr/auc": 0.7}))
    meta = json.loads((export / "model.json").read_text())
    tables = [t.name for t in spec.tables]
    assert meta["weights"] == ["dense.safetensors", *(f"tables/{t}.safetensors" for t in tables)]
    assert meta["step"] == 7 and meta["metrics"] == {"val/ctr/auc": 0.7}
    for name in meta["weights"]:
        raw = (export / name).read_bytes()
        header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])  # safetensors: no pickle
        if name.startswith("tables/"):
            assert set(header) - {"__metadata__"} == {f"ebc.embedding_bags.{Path(name).stem}.weight"}
    model, _, loaded = load_export(str(export))
    _equal(model.state_dict(), state)
    assert loaded["version"] == meta["version"]
    # The same tensors again: the same content version; other weights: another.
    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", []).model
    again = write_export(str(tmp_path / "again"), state, cfg, spec)
    assert json.loads(Path(again, "model.json").read_text())["version"] == meta["version"]
    state["ebc.embedding_bags.device.weight"][0, 0] += 1
    other = write_export(str(tmp_path / "other"), state, cfg, spec)
    assert json.loads(Path(other, "model.json").read_text())["version"] != meta["version"]


def test_loaded_parameters_are_the_mapped_files(tmp_path):
    spec = demo_spec()
    write_checkpoint(tmp_path / "ckpt", spec)
    export = export_model(str(tmp_path / "ckpt"), str(tmp_path / "export"))
    model, _, _ = load_export(export)
    user = model.ebc.embedding_bags["user"].weight
    maps = Path("/proc/self/maps").read_text().splitlines()
    start = user.untyped_storage().data_ptr()
    mapped = [line for line in maps if line.endswith("tables/user.safetensors")]
    spans = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in mapped]
    assert any(lo <= start < hi for lo, hi in spans), (hex(start), mapped)


def test_format_1_exports_still_load(tmp_path, repo_root):
    spec = demo_spec()
    cfg = load_config(repo_root / "configs/jobs/train_local.yaml", []).model
    state = write_checkpoint(tmp_path / "ckpt", spec)
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / "weights.pt")
    meta = {"format_version": 1, "model_config": cfg.model_dump(mode="json"), "spec": spec.model_dump(mode="json")}
    (old / "model.json").write_text(json.dumps(meta))
    model, _, loaded = load_export(str(old))
    _equal(model.state_dict(), state)
    assert loaded["version"] == content_version([old / "weights.pt"], meta["model_config"], meta["spec"])
    assert check_export(str(old))[1]["version"] == loaded["version"]


def test_unreadable_or_unknown_exports_say_what_to_do(tmp_path):
    spec = demo_spec()
    write_checkpoint(tmp_path / "ckpt", spec)
    export = Path(export_model(str(tmp_path / "ckpt"), str(tmp_path / "export")))
    meta = json.loads((export / "model.json").read_text())
    (export / "model.json").write_text(json.dumps({**meta, "format_version": 9}))
    with pytest.raises(ExportError, match=r"export format 9, this code reads \[1, 2\]: export the training checkpoint"):
        load_export(str(export))
    (export / "model.json").write_text(json.dumps(meta))
    (export / "tables/item.safetensors").unlink()
    with pytest.raises(ExportError, match=r"missing tables/item.safetensors"):
        check_export(str(export))
    # A table of another size than the spec says: refused before any data is read.
    write_checkpoint(tmp_path / "small", demo_spec(rows={"user": 10}))
    small = export_model(str(tmp_path / "small"), str(tmp_path / "small-export"))
    small_meta = json.loads(Path(small, "model.json").read_text())
    Path(small, "model.json").write_text(json.dumps({**small_meta, "spec": spec.model_dump(mode="json")}))
    with pytest.raises(
        ExportError, match=r"shape mismatches \['ebc.embedding_bags.user.weight: \(10, 16\) vs \(100000, 16\)'\]"
    ):
        check_export(small)


def test_the_dcp_reader_the_export_uses_still_matches_the_pinned_torch():
    """pipeline/train/dcp_reader.py follows FileSystemReader.read_data and uses these of its
    attributes: a torch upgrade that renames them fails here, not in an export."""
    from torch.distributed.checkpoint import FileSystemReader

    from pipeline.train.dcp_reader import READER_ATTRIBUTES

    reader = FileSystemReader("/nonexistent")
    missing = [a for a in READER_ATTRIBUTES if not hasattr(reader, a)]
    assert not missing, missing
