"""The embedded cluster's worker setup hook, run in the test's own process."""

from __future__ import annotations

import importlib
import os
from unittest import mock

from pipeline.common.ray_cluster import WORKER_SETUP_HOOK


def run_worker_hook() -> None:
    """Import WORKER_SETUP_HOOK by its name, as Ray does in each worker, and run it. The hook sets
    RAY_ADDRESS when Ray is up in its process, and in a pytest process the session's cluster may
    be: the environment goes back as it was, or every job subprocess a later test starts
    (helpers/process_utils.child_env) would join that cluster."""
    module, name = WORKER_SETUP_HOOK.rsplit(".", 1)
    with mock.patch.dict(os.environ):
        getattr(importlib.import_module(module), name)()
