"""pipeline/score/allocator.py without starting processes: thresholds a C int cannot hold are
refused, Ray's wheel ships the jemalloc the actors preload, a job says when actors missed it."""

import os
import sys

import pytest

from pipeline.score.allocator import JEMALLOC_CONF, jemalloc_env, jemalloc_path, keep_freed_memory


@pytest.mark.parametrize("kwargs", [dict(mmap_threshold=1 << 40), dict(trim_threshold=0)])
def test_values_a_c_int_cannot_hold_are_refused_not_truncated(kwargs):
    with pytest.raises(ValueError, match="must be in"):
        keep_freed_memory(**kwargs)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")


@linux_only
def test_rays_wheel_ships_the_jemalloc_that_scoring_actors_preload():
    env = jemalloc_env()
    assert env["LD_PRELOAD"] == jemalloc_path() and os.path.isfile(env["LD_PRELOAD"])
    assert env["MALLOC_CONF"] == JEMALLOC_CONF


def test_a_job_whose_actors_missed_jemalloc_says_so():
    from pipeline.score.config import ScoreConfig
    from pipeline.score.run import _warn_if_not_jemalloc

    lines: list[str] = []
    actors = [{"allocator": "jemalloc"}, {"allocator": "system"}]
    _warn_if_not_jemalloc(ScoreConfig(), actors, lines.append)
    assert len(lines) == 1 and "1 of 2 scoring actors ran without jemalloc" in lines[0]
    _warn_if_not_jemalloc(ScoreConfig(actor_allocator="system"), actors, lines.append)
    _warn_if_not_jemalloc(ScoreConfig(), actors[:1], lines.append)
    assert len(lines) == 1
