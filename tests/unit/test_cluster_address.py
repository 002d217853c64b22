"""A driver told to join a cluster (--address, RAY_ADDRESS) says when nothing listens there,
instead of Ray's connection retries (about 13 minutes of C++ warnings)."""

from __future__ import annotations

import socket
import time

import pytest

from pipeline.common.config import ConfigError
from pipeline.common.ray_cluster import check_reachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_listening_address_passes_at_once():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        start = time.monotonic()
        check_reachable(f"127.0.0.1:{port}", timeout_s=30)
        check_reachable(f"localhost:{port}", timeout_s=30)
        assert time.monotonic() - start < 10


def test_an_address_where_nothing_listens_is_named_after_the_timeout():
    port = _closed_port()
    with pytest.raises(ConfigError, match=rf"cannot reach the Ray cluster at 127\.0\.0\.1:{port} \(Connection refused"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=1)


@pytest.mark.parametrize("address", ["auto", "local", "ray://127.0.0.1:1", "http://127.0.0.1:1"])
def test_addresses_that_name_no_cluster_port_are_left_to_ray(address):
    check_reachable(address, timeout_s=0)  # nothing listens at port 1: a check would fail
