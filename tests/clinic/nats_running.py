"""A real three-node NATS cluster for a test: started on free loopback ports, ready, stopped."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from feedback.clinic.nats_cluster import NatsCluster, nats_server_binary
from tests.conftest import missing_service


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, partitions: int = 0) -> AsyncIterator[NatsCluster]:
    """Without nats-server the test skips (fails when VMF_REQUIRE_SERVICES is set)."""
    binary = nats_server_binary()
    if binary is None:
        missing_service("nats-server is not installed: apt-get install -y nats-server")
    assert binary is not None
    cluster = NatsCluster.create(binary, tmp_path, partitions=partitions)
    cluster.start()
    try:
        await cluster.ready()
        yield cluster
    finally:
        cluster.stop()
