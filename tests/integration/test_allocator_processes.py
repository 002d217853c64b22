"""pipeline/score/allocator.py in real processes: glibc takes the thresholds, a process started
with jemalloc_env() allocates with jemalloc, and keeps freed pages until it releases them."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.score.allocator import jemalloc_env, keep_freed_memory

REPO = str(Path(__file__).resolve().parents[2])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's"
)
def test_glibc_takes_the_thresholds():
    assert keep_freed_memory() is True


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")


def _run_in_a_new_process(code: str, env: dict) -> tuple[str, str]:
    """(stdout, stderr) of `code` in a new Python process started with `env`."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**inherited, **env}, cwd=REPO, check=True, capture_output=True, text=True
    )
    return out.stdout.strip(), out.stderr


_ALLOCATOR = "from pipeline.score.allocator import active_allocator; print(active_allocator())"


@linux_only
def test_a_process_started_with_jemalloc_env_allocates_with_jemalloc():
    assert _run_in_a_new_process(_ALLOCATOR, {})[0] == "system"
    allocator, stderr = _run_in_a_new_process(_ALLOCATOR, jemalloc_env())
    assert allocator == "jemalloc"
    assert "<jemalloc>" not in stderr  # where jemalloc complains of a conf it cannot parse


_RELEASE = """
import numpy as np
from pipeline.score.allocator import release_freed_memory
from pipeline.score.actor import _resident_mb
x = np.ones(300 << 20, dtype=np.uint8)  # 300 MB, touched
del x
kept = _resident_mb()[0]
released = release_freed_memory()
print(released, kept - _resident_mb()[0])
"""


@linux_only
def test_jemalloc_keeps_freed_pages_until_the_actor_releases_them():
    released, freed_mb = _run_in_a_new_process(_RELEASE, jemalloc_env())[0].split()
    assert released == "True" and float(freed_mb) > 250  # kept by JEMALLOC_CONF, then given back
    released, _ = _run_in_a_new_process(_RELEASE, {})[0].split()
    assert released == "False"  # glibc's malloc: nothing to do
