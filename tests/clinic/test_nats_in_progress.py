"""A logger on a loaded machine: what it holds unacked (read ahead, in the batch being stored)
is kept its own with in-progress acks (+WPI), so that the server does not hand it copies ahead
of anything new (nats_logger.py, `_keep_in_progress`, against a real three-node cluster); and
what it reads ahead is bounded per instance, not per partition held (nats_pull.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import nats
import pytest
from nats.aio.msg import Msg

from feedback.clinic import nats_pull
from feedback.clinic.nats_cluster import NatsCluster
from feedback.clinic.nats_logger import NatsLogger, ensure_stream, subject_of
from feedback.clinic.nats_pull import PullFeed
from feedback.clinic.store import ClinicStore, Incoming, IngestResult
from feedback.outputs.topics import MessageNumberer
from tests.clinic.conftest import wait_until
from tests.clinic.test_nats_cluster import (  # noqa: F401 (the fixture)
    CLINIC,
    nats_cluster,
    station_message,
)

ACK_WAIT_S = 2.0
STORE_S = 1.2  # a batch: the next, read ahead meanwhile, is acked 2.4 s after it came


class SlowStore(ClinicStore):
    """A loaded machine's store: each batch takes STORE_S."""

    def ingest(self, batch: list[Incoming]) -> IngestResult:
        time.sleep(STORE_S)
        return super().ingest(batch)


class NoInProgress(NatsLogger):
    """The logger before in-progress acks: what it holds past ack_wait comes again."""

    async def _keep_in_progress(self) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("variant", ["correct", "no-in-progress"])
async def test_a_logger_slower_than_ack_wait_is_not_handed_its_own_copies(
    nats_cluster: NatsCluster,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    variant: str,
) -> None:
    """Eight batches of 100, each stored in 1.2 s, the next read ahead, a 2 s ack_wait: each
    message is delivered once. Control: without the in-progress acks the ones read ahead
    outlast ack_wait and come again (copies the store drops)."""
    total, batch = 800, 100
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=10.0)
        await ensure_stream(js)
        n = MessageNumberer("S-wpi")
        for i in range(total):
            leaf, body = station_message(n, i)
            subject = subject_of(f"vmf/v1/{CLINIC}/st-00/{leaf}")
            await js.publish(subject, json.dumps(body).encode())
    finally:
        await nc.close()
    kind = NoInProgress if variant == "no-in-progress" else NatsLogger
    logger = kind(nats_cluster.urls, SlowStore(str(tmp_path / "clinic.db")), durable="slow",
                  batch=batch, ahead=2, ack_wait_s=ACK_WAIT_S)  # fmt: skip
    running = asyncio.create_task(logger.run())
    try:
        await wait_until(lambda: logger.stats.totals.stored >= total, 60, "every message stored")
        await asyncio.sleep(2 * ACK_WAIT_S)  # a copy still to come is in by now
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        logger.store.close()
    assert logger.stats.totals.stored == total
    if variant == "no-in-progress":
        assert logger.stats.received > total and logger.stats.totals.duplicates > 0
        return
    assert logger.stats.received == total, logger.stats
    assert logger.stats.in_progress > 0


class RecordingClient:
    """What a feed meets of a nats-py client, recording its pull requests."""

    def __init__(self) -> None:
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self.requests: list[str] = []
        self._sids = 0

    def new_inbox(self) -> str:
        return f"_INBOX.{self._sids}"

    async def subscribe(self, subject: str, cb: object) -> object:
        self._sids += 1
        return SimpleNamespace(_id=self._sids, unsubscribe=self._nothing)

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        self.requests.append(subject.rsplit(".", 1)[1])

    async def _process_msg(self, *args: object) -> None:
        raise AssertionError("nothing delivered here")

    @staticmethod
    async def _nothing() -> None:
        pass


@pytest.mark.parametrize("variant", ["correct", "per-partition"])
async def test_the_read_ahead_is_the_instance_s_not_each_partition_s(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two partitions' feeds on one connection, two batches read ahead on the first: the
    second asks for nothing more until the logger has taken some. Control: a budget per feed
    (as before) lets each partition read two batches ahead, eight partitions sixteen."""
    if variant == "per-partition":
        monkeypatch.setattr(nats_pull, "_feeds", lambda nc: set())
    nc = RecordingClient()
    p0 = PullFeed(cast(Any, nc), "S", "g-p0", batch=10, ahead=2)
    p1 = PullFeed(cast(Any, nc), "S", "g-p1", batch=10, ahead=2)
    for feed in (p0, p1):
        await feed.start()
    assert nc.requests == []
    await p0.take(0.0)  # asks for the first batch
    for i in range(20):  # it came, and the next: two batches buffered
        await p0._on_msg(Msg(_client=cast(Any, nc), subject="_INBOX.1", reply=f"r{i}"))
    await p1.take(0.0)
    expected = ["g-p0"] if variant == "correct" else ["g-p0", "g-p1"]
    assert nc.requests == expected
