"""NatsCluster.ready means a stream can have a replica on every node, not only that JetStream
answers: just after the election the leader may not know every peer yet, and a three-replica
stream made then was refused (err_code 10005: a CI flake of the tests that start clusters)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from feedback.clinic import nats_connect
from feedback.clinic.nats_cluster import READY_PROBE, NatsCluster, nats_server_binary
from tests.conftest import missing_service


async def test_ready_waits_for_a_replica_on_every_node(tmp_path: Path) -> None:
    """Two of three nodes up: JetStream answers (the readiness the cluster had before, which
    passed here: the control), but ready() does not return. The third node up: it does, and
    leaves no probe stream behind."""
    binary = nats_server_binary()
    if binary is None:
        missing_service("nats-server is not installed: apt-get install -y nats-server")
    assert binary is not None
    cluster = NatsCluster.create(binary, tmp_path)
    for node in cluster.nodes[:2]:
        node.start()
    try:
        nc = await nats_connect.connect(cluster.logger_urls, max_reconnect_attempts=-1)
        try:
            js = nc.jetstream(timeout=2.0)
            deadline = time.monotonic() + 60
            while True:  # the old readiness
                try:
                    await js.account_info()
                    break
                except Exception:
                    assert time.monotonic() < deadline, "JetStream never answered on 2 of 3"
                    await asyncio.sleep(0.2)
            with pytest.raises(Exception):  # noqa: B017 (whatever the servers refuse with)
                await cluster.ready(timeout_s=5.0)
            cluster.nodes[2].start()
            await cluster.ready()
            assert READY_PROBE not in [s.config.name for s in await js.streams_info()]
        finally:
            await nc.close()
    finally:
        cluster.stop()
