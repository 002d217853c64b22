"""pipeline/allocator.py: the scoring actors' allocator (jemalloc preloaded, or glibc's malloc
with fixed thresholds)."""

import os
import platform
import subprocess
import sys

import pytest

from pipeline.allocator import JEMALLOC_CONF, jemalloc_env, jemalloc_path, keep_freed_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are glibc's")
def test_glibc_takes_the_thresholds():
    assert keep_freed_memory() is True


@pytest.mark.parametrize("kwargs", [dict(mmap_threshold=1 << 40), dict(trim_threshold=0)])
def test_values_a_c_int_cannot_hold_are_refused_not_truncated(kwargs):
    with pytest.raises(ValueError, match="must be in"):
        keep_freed_memory(**kwargs)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")


def _run_in_a_new_process(code: str, env: dict) -> tuple[str, str]:
    """(stdout, stderr) of `code` in a new Python process started with `env`."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    out = subprocess.run([sys.executable, "-c", code], env={**inherited, **env}, cwd=REPO, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip(), out.stderr


_ALLOCATOR = "from pipeline.allocator import active_allocator; print(active_allocator())"


@linux_only
def test_rays_wheel_ships_the_jemalloc_that_scoring_actors_preload():
    env = jemalloc_env()
    assert env["LD_PRELOAD"] == jemalloc_path() and os.path.isfile(env["LD_PRELOAD"])
    assert env["MALLOC_CONF"] == JEMALLOC_CONF


@linux_only
def test_a_process_started_with_jemalloc_env_allocates_with_jemalloc():
    assert _run_in_a_new_process(_ALLOCATOR, {})[0] == "system"
    allocator, stderr = _run_in_a_new_process(_ALLOCATOR, jemalloc_env())
    assert allocator == "jemalloc"
    assert "<jemalloc>" not in stderr  # where jemalloc complains of a conf it cannot parse


_RELEASE = """
import numpy as np
from pipeline.allocator import release_freed_memory
from pipeline.scorer import _resident_mb
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


def test_a_job_whose_actors_missed_jemalloc_says_so():
    from pipeline.score_config import ScoreConfig
    from pipeline.scoring import _warn_if_not_jemalloc

    lines: list[str] = []
    actors = [{"allocator": "jemalloc"}, {"allocator": "system"}]
    _warn_if_not_jemalloc(ScoreConfig(), actors, lines.append)
    assert len(lines) == 1 and "1 of 2 scoring actors ran without jemalloc" in lines[0]
    _warn_if_not_jemalloc(ScoreConfig(actor_allocator="system"), actors, lines.append)
    _warn_if_not_jemalloc(ScoreConfig(), actors[:1], lines.append)
    assert len(lines) == 1
