"""Memory allocators for processes that run the model on large batches (scoring actors).

jemalloc (the default for scoring actors). Under glibc's malloc a scoring actor's private
memory crept up the longer it ran: Ray Data calls the model from a thread of its own, whose
glibc arena is a chain of 64 MiB sub-heaps, and each batch's activations (several MiB apiece)
fragment it. Measured in the actor (mallinfo2, malloc_info): in use ~160 MB throughout, the
arena 300 -> 440 MB over 480 batches, peak RSS 555-655 MB per run, varying from run to run.
glibc with one arena (MALLOC_ARENA_MAX=1), or with the model run on Ray's main thread, was no
better; a lower mmap threshold (4 MiB) gave 459 MB but ran 22% slower. Ray's Linux wheels
ship jemalloc (ray/core/libjemalloc.so); it must be preloaded when a process starts, so the
actors get it through their runtime_env (pipeline/score/run.py), and `active_allocator()` tells
each one what it got. Its settings, measured on 10M rows (forward-only rows/s, actor peak):
  - jemalloc's defaults: 120k rows/s instead of ~260k. Allocations of 8 MiB and more go to a
    dedicated arena that returns freed pages at once, so every batch faulted its largest
    activations in again. `oversize_threshold:0` turns that arena off.
  - freed pages returned after some seconds unused (dirty_decay_ms 1000 or 5000): peak 450-454
    MB, but 125k rows/s forward-only: jemalloc's decay purged pages that the next batch used
    again (12.6M page faults for 1M rows).
  - never returned (decay -1): full speed, but the peak crept up in some runs (461-485 MB):
    pages kept that were never used again.
  - never returned by jemalloc itself, all given back by the actor every RELEASE_EVERY_S
    (`release_freed_memory`): full speed; peak 450-456 MB for 1M and 10M rows, 464 MB for 30M
    (benchmarks/bench_score.py).

glibc malloc settings, where jemalloc is not used:

With glibc's defaults, blocks above a dynamic threshold are mmap'ed and freed memory at the
top of the heap is returned to the kernel, so a fresh process faults in zeroed pages for
every batch's activations (several MiB each) until glibc's thresholds have adapted. Measured
on the scoring model (batch 8192, one thread, a new process): ~150k rows/s over the first
passes with the defaults, ~225k with both thresholds fixed (either alone: no gain, or slower,
since setting one turns off glibc's dynamic adjustment of the other); in a scoring actor, the
forward's CPU per row over its first 300k rows: 5.3-6.6 us with the defaults, 4.5 us with
these settings (over millions of rows the two meet). The price is up to `trim_threshold` bytes
of freed heap kept per process (64 MiB; 256 MiB measured no faster); fragmentation comes on
top of it (above).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
# No eager-purging arena for large allocations, no time-based purging: the actor returns freed
# pages itself, every RELEASE_EVERY_S (release_freed_memory), where the cost is bounded (above).
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
RELEASE_EVERY_S = 2.0
_ALL_ARENAS = 4096  # MALLCTL_ARENAS_ALL in jemalloc.h


def jemalloc_path() -> str | None:
    """The jemalloc shared library of the installed Ray (ray/core/libjemalloc.so, in its Linux
    wheels), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ray

    path = os.path.join(os.path.dirname(ray.__file__), "core", "libjemalloc.so")
    return path if os.path.isfile(path) else None


def jemalloc_env() -> dict[str, str]:
    """Environment variables that make a new process allocate with jemalloc (preloaded when it
    starts, configured by JEMALLOC_CONF); empty where Ray ships no jemalloc."""
    path = jemalloc_path()
    return {"LD_PRELOAD": path, "MALLOC_CONF": JEMALLOC_CONF} if path else {}


def active_allocator() -> str:
    """'jemalloc' if this process's malloc is a preloaded jemalloc, else 'system'."""
    try:
        with open("/proc/self/maps") as f:
            return "jemalloc" if any("libjemalloc" in line for line in f) else "system"
    except OSError:
        return "system"


def prepare_allocator() -> str:
    """The allocator this process runs on ('jemalloc' or 'system'), glibc's thresholds set where
    it is glibc's malloc (keep_freed_memory): what a process that runs the model calls first."""
    allocator = active_allocator()
    if allocator == "system":
        keep_freed_memory()
    return allocator


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Allocations below `mmap_threshold` come from the heap, and up to `trim_threshold` bytes
    of freed heap stay mapped. Returns False (and changes nothing) where it does not apply:
    not Linux, or a C library without mallopt (musl)."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 < value < 2**31:  # mallopt takes a C int; ctypes would silently truncate
            raise ValueError(f"{name} must be in (0, 2**31), got {value}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success.
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


def release_freed_memory() -> bool:
    """Give the pages jemalloc keeps for freed memory (all arenas) back to the kernel. False,
    and nothing done, where this process's malloc is not a preloaded jemalloc."""
    mallctl = _mallctl()
    return mallctl is not None and mallctl(f"arena.{_ALL_ARENAS}.purge".encode(), None, None, None, 0) == 0


@functools.lru_cache(maxsize=1)
def _mallctl():
    if active_allocator() != "jemalloc":
        return None
    mallctl = getattr(ctypes.CDLL(None), "mallctl", None)  # the preloaded library's symbol
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        mallctl.restype = ctypes.c_int
    return mallctl
