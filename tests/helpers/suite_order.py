"""The order in which `make test` hands test files to its 2 pytest processes.

`make test` gives whole files to the processes as they free up (--dist loadfile
--no-loadscope-reorder). Starting with the longest files and ending with the short ones keeps
both processes busy to the end; xdist's own order (most tests first) left the one-test training
files, a minute each, for last. The order changes no result: each file's tests keep their order,
and files share nothing but the session fixtures of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]

# CPU seconds of the integration files, each run alone on 2 cores (2026-12-02; the whole suite is
# ~1,180 CPU seconds). The five that run gloo ranks (helpers/dist_utils) were measured again after
# the ranks moved to a preloaded forkserver (2026-12-03, on a machine twice as slow, halved).
# Unlisted files (the unit tests, ~1 s each) weigh 0 and follow in collection order.
HEAVY_FILES = {
    "integration/test_job_output.py": 163,  # 2026-12-06: with the Ctrl-C case
    "integration/test_retrain_days.py": 159,
    "integration/test_train_recovery.py": 157,  # 2026-12-06: with the rerun of a finished run
    "integration/test_train_cluster.py": 107,
    "integration/test_score_job.py": 91,
    "integration/test_compare_report.py": 85,
    "integration/test_train_quality.py": 75,
    "integration/test_managed_job.py": 66,
    "integration/test_retrain_url_registry.py": 53,
    "integration/test_own_logs.py": 51,
    "integration/test_train_job.py": 39,
    "integration/test_train_best.py": 38,
    "integration/test_data_memory.py": 35,
    "integration/test_managed_tables_sharded.py": 20,  # 2026-12-06: with the 5 reset cases
    "integration/test_export_memory.py": 18,
    "integration/test_reader_ray.py": 14,
    "integration/test_checkpoint_resharding.py": 11,
    "integration/test_gauc_distributed.py": 10,
    "integration/test_sharded_equivalence.py": 9,
    "integration/test_ray_data_tuning_reads.py": 9,
    "integration/test_balancing_distributed.py": 6,
    "integration/test_synthetic_generation.py": 2,
    "integration/test_allocator_processes.py": 2,
}


def file_weight(path: Path) -> int:
    """HEAVY_FILES' weight of the test file at `path` (0 if unlisted)."""
    return HEAVY_FILES.get(Path(path).resolve().relative_to(TESTS_DIR).as_posix(), 0)


def order_items(items: list) -> None:
    """Sort pytest's collected items in place: the heaviest files first, the rest after in
    collection order (a stable sort: the tests of a file keep their order)."""
    items.sort(key=lambda item: -file_weight(item.path))
