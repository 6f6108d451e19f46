"""A partition's lease changes hands while its old holder has max_ack_pending messages unacked,
against a real three-node cluster (nats-server): the new holder must not stall.

The server delivers nothing new on a consumer whose unacked messages reached max_ack_pending;
the new holder gets the old holder's messages only when they are redelivered, after ack_wait
(nats-server serves redeliveries before it looks at max_ack_pending). The partition's
consumer is created here, as an operator would, with a small max_ack_pending and a short
ack_wait (the logger binds an existing consumer as it is). The old holder (batch =
max_ack_pending, a slow store) is stopped mid-batch holding every message the consumer
allows in flight: killed -9, or paused (SIGSTOP) until the new holder is done and then let go
on (SIGCONT), so that it commits and acks its stale batch late. Every message must then be
stored exactly once, in order per session.

Negative control (`no-redelivery`): the same with an ack_wait far beyond the test, so the old
holder's messages never come back: the new holder stalls, and the drain check fails with a
message naming the consumer's state (ack pending at its maximum, nothing redelivered).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerInfo

from feedback.clinic import nats_connect, nats_partitions
from feedback.clinic.nats_cluster import NatsCluster
from feedback.clinic.nats_lease import BUCKET_PREFIX
from feedback.clinic.nats_logger import consumer_config, ensure_stream
from feedback.outputs.topics import MessageNumberer, encode
from tests.clinic.nats_running import running_cluster
from tests.clinic.test_nats_cluster import (
    CLINIC,
    check_exactly_once_in_order,
    count,
    start_logger,
    station_message,
)

GROUP = "clinic-loggers"  # start_logger's --durable
DURABLE = nats_partitions.durable_name(GROUP, 0)
MAX_ACK_PENDING = 100
ACK_WAIT_S = 8.0  # longer than a new holder takes to start and take the lease
NEVER_S = 3600.0
SESSIONS, PER_STATION = 4, 90  # 360 messages: more than three times max_ack_pending
LEASE_S = 2.0
ARGS = ("--partitions", "1", "--lease", str(LEASE_S), "--batch", str(MAX_ACK_PENDING))


@pytest.fixture
async def one_partition(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with running_cluster(tmp_path, partitions=1) as cluster:
        yield cluster


async def prepare(cluster: NatsCluster, ack_wait_s: float, ack_all: bool) -> None:
    """The partitioned stream, the partition's consumer (small max_ack_pending; an ack per
    message, the loggers' default, or AckPolicy.ALL), and every session published before any
    logger starts."""
    loggers = await nats_connect.connect(cluster.logger_urls)
    stations = await nats.connect(servers=cluster.urls)
    try:
        js = loggers.jetstream(timeout=10.0)
        await ensure_stream(js, nats_partitions.STREAM, partitioned=True)
        config = consumer_config(DURABLE, ack_wait_s, nats_partitions.filter_subject(0),
                                 ack_all=ack_all)  # fmt: skip
        config.max_ack_pending = MAX_ACK_PENDING
        await js.add_consumer(nats_partitions.STREAM, config)
        numberers = [MessageNumberer(f"S-hand-{k:02d}") for k in range(SESSIONS)]
        for i in range(PER_STATION):  # sessions interleaved, as stations publish them
            for k, n in enumerate(numberers):
                leaf, body = station_message(n, i)
                await stations.publish(f"vmf.v1.{CLINIC}.st-{k:02d}.{leaf}", encode(body))
        await stations.flush()
        total = SESSIONS * PER_STATION
        deadline = time.monotonic() + 20
        while (await js.stream_info(nats_partitions.STREAM)).state.messages < total:
            assert time.monotonic() < deadline, "the stream did not capture every message"
            await asyncio.sleep(0.1)
    finally:
        await loggers.close()
        await stations.close()


async def consumer(cluster: NatsCluster) -> ConsumerInfo:
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        return await nc.jetstream(timeout=10.0).consumer_info(nats_partitions.STREAM, DURABLE)
    finally:
        await nc.close()


async def lease_holder(cluster: NatsCluster) -> str:
    nc = await nats_connect.connect(cluster.logger_urls)
    try:
        kv = await nc.jetstream(timeout=10.0).key_value(BUCKET_PREFIX + GROUP)
        try:
            entry = await kv.get("p.0")
        except nats.js.errors.KeyNotFoundError:
            return ""
        return (entry.value or b"").decode()
    finally:
        await nc.close()


async def wait_for_lease(cluster: NatsCluster, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not (await lease_holder(cluster)).startswith(f"{name}-"):
        assert time.monotonic() < deadline, f"{name} never took partition 0's lease"
        await asyncio.sleep(0.2)


async def wait_drained(cluster: NatsCluster, db_url: str, timeout_s: float) -> None:
    total = SESSIONS * PER_STATION
    deadline = time.monotonic() + timeout_s
    while (stored := count(db_url, "SELECT count(*) FROM messages")) < total:
        if time.monotonic() > deadline:
            c = await consumer(cluster)
            raise AssertionError(
                f"the new holder stalled: {stored} of {total} stored after {timeout_s:.0f} s; "
                f"consumer: {c.num_ack_pending} unacked (max_ack_pending {MAX_ACK_PENDING}), "
                f"{c.num_redelivered} redelivered, {c.num_pending} never delivered"
            )
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("acks", ["explicit", "all"])
@pytest.mark.parametrize("old_holder", ["killed", "paused", "no-redelivery"])
async def test_a_new_lease_holder_drains_what_the_old_one_left_at_max_ack_pending(
    one_partition: NatsCluster, tmp_path: Path, old_holder: str, acks: str
) -> None:
    cluster, db_url = one_partition, str(tmp_path / "clinic.db")
    ack_wait_s = NEVER_S if old_holder == "no-redelivery" else ACK_WAIT_S
    await prepare(cluster, ack_wait_s, ack_all=acks == "all")
    a = await start_logger(cluster, db_url, "a", slow_s=5.0, extra=ARGS)
    b = None
    try:
        await wait_for_lease(cluster, "a", 20)
        deadline = time.monotonic() + 20
        while a.ingests == 0:  # it is storing its first batch: nothing acked yet
            assert time.monotonic() < deadline, "the old holder never began a batch"
            await asyncio.sleep(0.02)
        if old_holder == "paused":
            a.proc.send_signal(signal.SIGSTOP)
        else:
            a.proc.send_signal(signal.SIGKILL)
            await a.proc.wait()
        held = await consumer(cluster)
        # The premise: the old holder has everything the consumer allows in flight, and the
        # server holds the rest back.
        assert held.num_ack_pending == MAX_ACK_PENDING, held
        assert held.num_pending == SESSIONS * PER_STATION - MAX_ACK_PENDING, held
        b = await start_logger(cluster, db_url, "b", extra=ARGS)
        await wait_for_lease(cluster, "b", 4 * LEASE_S + 10)
        at_handover = await consumer(cluster)
        assert count(db_url, "SELECT count(*) FROM messages") == 0
        assert at_handover.num_ack_pending == MAX_ACK_PENDING, at_handover
        if old_holder == "no-redelivery":
            with pytest.raises(AssertionError, match=r"stalled: 0 of 360 .* 0 redelivered"):
                await wait_drained(cluster, db_url, 3 * ACK_WAIT_S)
            return
        await wait_drained(cluster, db_url, 3 * ACK_WAIT_S + 30)
        if old_holder == "paused":  # it wakes up, commits its stale batch and acks it
            a.ingests = 0
            a.proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 20
            while a.ingests == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2 * LEASE_S)
        done = await consumer(cluster)
        assert done.num_pending == 0, done
        # Every message delivered once, and the old holder's batch once more (redelivered).
        assert done.delivered.consumer_seq >= SESSIONS * PER_STATION + MAX_ACK_PENDING, done
    finally:
        if old_holder == "paused" and a.proc.returncode is None:
            a.proc.send_signal(signal.SIGCONT)
        await a.stop()
        if b is not None:
            await b.stop()
    check_exactly_once_in_order(db_url, SESSIONS, PER_STATION)
