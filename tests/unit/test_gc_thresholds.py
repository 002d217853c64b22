"""pipeline/common/ray_cluster.py collect_less_often: the garbage-collection thresholds of the
jobs' drivers and of the embedded cluster's worker processes."""

import gc

import pytest

from helpers.worker_hook import run_worker_hook
from pipeline.common.ray_cluster import GC_THRESHOLDS, collect_less_often


@pytest.fixture
def thresholds():
    """This process's thresholds back as they were after the test."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_pythons_thresholds_are_raised(thresholds):
    gc.set_threshold(700, 10, 10)  # Python's own
    collect_less_often()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700 and GC_THRESHOLDS[1] >= 10 and GC_THRESHOLDS[2] >= 10


def test_higher_thresholds_are_kept_and_collection_turned_off_stays_off(thresholds):
    gc.set_threshold(10**6, 5, 100)
    collect_less_often()
    assert gc.get_threshold() == (10**6, GC_THRESHOLDS[1], 100)
    gc.set_threshold(0)
    collect_less_often()
    assert gc.get_threshold()[0] == 0


def test_fewer_collections_while_a_process_builds_its_modules(thresholds):
    """What importing does to the collector, in miniature: 300k new objects that stay alive."""

    def collections_while_allocating() -> int:
        counts = []
        gc.callbacks.append(lambda phase, info: counts.append(info["generation"]) if phase == "start" else None)
        try:
            alive = [{"i": i} for i in range(300_000)]
        finally:
            gc.callbacks.pop()
        del alive
        return len(counts)

    gc.set_threshold(700, 10, 10)
    gc.collect()
    with_pythons = collections_while_allocating()
    collect_less_often()
    gc.collect()
    with_ours = collections_while_allocating()
    assert with_ours * 20 < with_pythons, (with_ours, with_pythons)


def test_the_embedded_clusters_worker_hook_raises_them(thresholds):
    gc.set_threshold(700, 10, 10)
    run_worker_hook()
    assert gc.get_threshold() == GC_THRESHOLDS
