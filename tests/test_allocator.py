"""pipeline/allocator.py: glibc's malloc thresholds for model processes (scoring actors)."""

import platform
import sys

import pytest

from pipeline.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt thresholds are glibc's")
def test_glibc_takes_the_thresholds():
    assert keep_freed_memory() is True


@pytest.mark.parametrize("kwargs", [dict(mmap_threshold=1 << 40), dict(trim_threshold=0)])
def test_values_a_c_int_cannot_hold_are_refused_not_truncated(kwargs):
    with pytest.raises(ValueError, match="must be in"):
        keep_freed_memory(**kwargs)
