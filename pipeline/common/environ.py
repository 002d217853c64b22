"""Environment variables set for the duration of a block, where the user has not set them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environ_defaults(settings: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Set `settings` in os.environ where the user has not, for the duration of the block;
    yields what is in effect. Nothing leaks into later code or into child processes started
    after the block (those started inside inherit it, which is the point for Ray's processes)."""
    applied = {k: v for k, v in settings.items() if k not in os.environ}
    os.environ.update(applied)
    try:
        yield {k: os.environ[k] for k in settings}
    finally:
        for k in applied:
            os.environ.pop(k, None)
