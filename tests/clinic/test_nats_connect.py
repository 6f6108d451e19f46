"""Credentials that hold for every node a connection reconnects to (nats_connect.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig

from feedback.clinic import nats_connect
from feedback.clinic.nats_cluster import NatsCluster
from tests.clinic.conftest import wait_until
from tests.clinic.test_nats_partitions import partitioned

__all__ = ["partitioned"]  # the fixture, used by name


def test_credentials_leave_the_urls_for_the_options() -> None:
    bare, options = nats_connect.split_credentials(
        ["nats://logger:p%40ss@n1:4222", "nats://logger:p%40ss@n2:4222", "n3:4222"]
    )
    assert bare == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    assert options == {"user": "logger", "password": "p@ss"}
    assert nats_connect.split_credentials(["tls://tok@n1:4222"]) == (
        ["tls://n1:4222"],
        {"token": "tok"},
    )
    assert nats_connect.split_credentials(["nats://n1:4222"]) == (["nats://n1:4222"], {})
    with pytest.raises(ValueError, match="different credentials"):
        nats_connect.split_credentials(["nats://a:x@n1:4222", "nats://b:y@n2:4222"])


async def in_loggers_account(nc: NATS, stream: str) -> bool:
    """Whether the connection sees `stream`, made in the loggers' account: retried while the
    cluster elects its leaders after a node's loss; the stations' account answers that it
    has no such stream."""
    while True:
        try:
            await nc.jetstream(timeout=2.0).stream_info(stream)
            return True
        except nats.js.errors.NotFoundError:
            return False
        except (TimeoutError, nats.errors.Error, nats.js.errors.ServiceUnavailableError):
            await asyncio.sleep(0.2)


Connect = Callable[[list[str]], Awaitable[NATS]]


async def with_options(servers: list[str]) -> NATS:
    return await nats_connect.connect(servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def in_urls(servers: list[str]) -> NATS:
    return await nats.connect(servers=servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def create_bucket(nc: NATS, bucket: str) -> None:
    """A three-replica bucket, once the meta leader knows every peer: just after the cluster
    formed it may answer "no suitable peers for placement" (err_code 10005) for a moment."""
    for _ in range(100):
        try:
            await nc.jetstream(timeout=5.0).create_key_value(
                KeyValueConfig(bucket=bucket, replicas=3)
            )
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10005:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("no placement for a three-replica bucket within 20 s")


@pytest.mark.parametrize("variant", ["options", "in-urls"])
async def test_a_reconnect_to_a_node_the_servers_told_of_keeps_the_logger_s_account(
    partitioned: NatsCluster, variant: str
) -> None:
    """A logger given one node's URL learns the others from the servers, without credentials;
    that node is killed -9 and the connection reconnects to one of those. It is still in the
    loggers' account and sees the lease bucket's stream. Control: credentials in the URL only
    (as the logger connected before): the reconnect lands in the stations' account
    (`no_auth_user`), where the bucket does not exist: the lease renewals' "no response from
    stream" after a node's loss in test_nats_partitions.py."""
    connect: Connect = with_options if variant == "options" else in_urls
    first = partitioned.nodes[0]
    nc = await connect([partitioned.logger_urls[0]])
    try:
        await create_bucket(nc, "reconnect-check")
        assert await in_loggers_account(nc, "KV_reconnect-check")
        reconnects = nc.stats["reconnects"]
        first.kill9()
        await wait_until(lambda: nc.stats["reconnects"] > reconnects and nc.is_connected,
                         30, "reconnected to another node")  # fmt: skip
        assert nc.connected_url is not None and nc.connected_url.port != first.client_port
        seen = await in_loggers_account(nc, "KV_reconnect-check")
        assert seen == (variant == "options")
    finally:
        await nc.close()
