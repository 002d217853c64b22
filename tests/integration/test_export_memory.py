"""What the export's format is for, measured in real processes: exporting holds about one table
at a time (not the model), and processes that load the same export share one copy of it, a
managed table's id mapping included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from helpers.checkpoints import demo_spec, write_checkpoint
from helpers.process_utils import child_env, stop_tree
from helpers.scoring_data import random_export
from pipeline.score.allocator import jemalloc_env

TABLES = ["user", "item", "category", "device", "t0", "t1", "t2", "t3"]
ROWS, DIM = 1 << 19, 32
TABLE_BYTES = ROWS * DIM * 4  # 64 MiB each: the model is 8 of them
MANAGED_ROWS = 1 << 21
# Everything the export imports, before the baseline is taken: what remains is the export's own.
IMPORTS = "import sys, psutil, torch, safetensors.torch, ple_model, pipeline.train.checkpoint, pipeline.train.config"
# A field of /proc/self/status in bytes. The peak is the kernel's high-water mark of this
# process's memory (VmHWM), not ru_maxrss: that one starts from the parent's RSS at fork (the
# pytest process, with the checkpoint it wrote).
STATUS = 'status = lambda key: int(next(x for x in open("/proc/self/status") if x.startswith(key)).split()[1]) * 1024'
EXPORT = f"""{IMPORTS}
{STATUS}
from pipeline.train.export import export_model
base = status("VmHWM")
export_model(sys.argv[1], sys.argv[2])
print(status("VmHWM") - base)
"""
# As a scoring actor does (pipeline/score/actor.py), on its allocator: loads the export (and
# prints the most memory the load took at its height, the high-water mark reset before it),
# gives back what the load freed, reads every byte of every parameter and buffer, scores a
# batch, and waits while the test measures it.
LOAD = f"""{IMPORTS}
{STATUS}
from pipeline.data.collate import collate
from pipeline.data.synthetic import generate_table
from pipeline.score.allocator import prepare_allocator, release_freed_memory
from pipeline.train.export import check_export, load_export
assert prepare_allocator() == "jemalloc"
batch = collate(generate_table(256, seed=0), check_export(sys.argv[1])[0], with_labels=False)
release_freed_memory()  # the baseline: what the imports and the batch hold, nothing freed
print("ready", flush=True); sys.stdin.readline()
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
start = status("VmRSS")
model, _, _ = load_export(sys.argv[1])
load_peak = status("VmHWM") - start
release_freed_memory()
with torch.inference_mode():
    total = sum(float(p.sum()) for p in model.parameters()) + sum(int(b.max()) for b in model.buffers())
    model(batch.sparse_features, batch.dense_features)
print("loaded", load_peak, flush=True); sys.stdin.readline()
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=child_env(**jemalloc_env()),
        text=True,
        stdout=subprocess.PIPE,
        **kwargs,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "step_00000007"
    write_checkpoint(path, demo_spec(rows=dict.fromkeys(TABLES, ROWS), dim=DIM, extra_tables=4))
    return path


@pytest.fixture(scope="module")
def export(checkpoint) -> tuple[Path, int]:
    """(the export, the peak memory its exporting process added)."""
    out = checkpoint.parent / "export"
    proc = _python(EXPORT, str(checkpoint), str(out))
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0
    return out, int(stdout.strip().splitlines()[-1])


def test_exporting_holds_one_table_at_a_time_not_the_model(export):
    out, peak = export
    model_bytes = sum(f.stat().st_size for f in (out / "tables").iterdir())
    assert model_bytes >= len(TABLES) * TABLE_BYTES
    # One table read at a time, kept as it was read (pipeline/train/dcp_reader.py): DCP's own
    # load would copy it into place, two tables at the peak (measured: 2.10 tables, 1.09 with the reader).
    assert peak < 1.5 * TABLE_BYTES < model_bytes / 4, (peak, TABLE_BYTES, model_bytes)
    meta = json.loads((out / "model.json").read_text())
    assert meta["weights"] == ["dense.safetensors", *(f"tables/{t}.safetensors" for t in TABLES)]


@pytest.fixture(scope="module")
def managed_export(tmp_path_factory) -> Path:
    """An export whose user table (2M rows) is managed: a 48 MB id mapping beside a 64 MB table."""
    out = tmp_path_factory.mktemp("managed") / "export"
    return Path(
        random_export(out, spec_file="synthetic_managed.yaml", rows={"user": MANAGED_ROWS}, dims={"user": DIM // 4})
    )


def test_two_processes_share_one_copy_of_the_loaded_model(export):
    _assert_shared_by_two_processes(export[0], sum(f.stat().st_size for f in export[0].rglob("*.safetensors")))


def test_two_processes_share_one_copy_of_a_managed_tables_mapping(managed_export):
    mapping_bytes = (managed_export / "managed" / "user.safetensors").stat().st_size
    assert mapping_bytes > 24 * MANAGED_ROWS
    # TorchRec's load hook re-sorts the mapping in place: a private copy in each process,
    # 2 x mapping_bytes here, unless the export's sorted mapping is assigned as it is.
    load_peaks = _assert_shared_by_two_processes(managed_export, mapping_bytes)
    # Nor is a mapping allocated while the model is built, before the mapped one replaces it
    # (another mapping_bytes at the load's height): what the load reads of the file (the sorted
    # ids, a third of it, checked for order) is most of its peak. Measured: 0.43 x mapping_bytes,
    # 1.43 x when the model was built with its mapping on the CPU.
    assert max(load_peaks) < 0.6 * mapping_bytes, (load_peaks, mapping_bytes)


def _assert_shared_by_two_processes(out: Path, shared_bytes: int) -> list[int]:
    """Two processes load the export `out`, read all of it and score a batch: together they
    add less than a quarter of `shared_bytes` (what a copy per process would hold) in private
    memory. Returns the memory each load took at its height."""
    procs = [_python(LOAD, str(out), stdin=subprocess.PIPE) for _ in range(2)]
    try:

        def unique_after(line: str) -> list[int]:
            for p in procs:
                said = p.stdout.readline().split()
                assert said[:1] == [line], said
                load_peaks.extend(int(x) for x in said[1:])
            return [psutil.Process(p.pid).memory_full_info().uss for p in procs]

        load_peaks: list[int] = []
        before = unique_after("ready")
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        after = unique_after("loaded")  # both alive, every page read by both
        private = sum(after) - sum(before)
        # A copy per process would be 2 x shared_bytes of private memory: here, the pages are the
        # page cache's, mapped by both.
        assert private < shared_bytes / 4, (private, shared_bytes)
        return load_peaks
    finally:
        for p in procs:
            stop_tree(p)
