"""How the suite runs: its file order (tests/helpers/suite_order.py: its weights name files that
exist, and ordering starts with the heaviest file and keeps each file's own order), and the test
processes' thread count (tests/conftest.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from helpers.suite_order import HEAVY_FILES, TESTS_DIR, order_items


@dataclass
class Item:  # what order_items reads of a pytest item
    path: Path
    name: str


def test_every_weighted_file_exists():
    missing = [f for f in HEAVY_FILES if not (TESTS_DIR / f).is_file()]
    assert not missing, f"renamed or removed test files still weighted in helpers/suite_order.py: {missing}"


def test_heaviest_files_first_each_in_its_own_order():
    collected = [
        Item(TESTS_DIR / "unit/test_model.py", "a"),
        Item(TESTS_DIR / "integration/test_train_job.py", "job"),
        Item(TESTS_DIR / "unit/test_gauc.py", "b"),
        Item(TESTS_DIR / "integration/test_retrain_days.py", "first"),
        Item(TESTS_DIR / "integration/test_retrain_days.py", "second"),
        Item(TESTS_DIR / "unit/test_model.py", "c"),
        Item(TESTS_DIR / "integration/test_retrain_days.py", "third"),
    ]
    order_items(collected)
    assert [i.name for i in collected] == ["first", "second", "third", "job", "a", "b", "c"]


def test_torch_in_the_test_processes_uses_the_thread_count_conftest_sets():
    # Fails when torch is imported before tests/conftest.py sets OMP_NUM_THREADS (1 unless the
    # environment says otherwise; torch takes no more threads than there are cores).
    import torch

    assert torch.get_num_threads() <= int(os.environ["OMP_NUM_THREADS"])
