"""The NATS logger's pull feed against a real three-node cluster: it reads ahead while a batch
is stored, and stops reading ahead once told another instance shares the sessions."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import nats

from feedback.clinic.nats_cluster import NatsCluster
from feedback.clinic.nats_logger import STREAM, consumer_config, ensure_stream
from feedback.clinic.nats_pull import PullFeed
from tests.clinic.test_nats_cluster import nats_cluster  # noqa: F401 (the fixture)


async def test_the_feed_reads_ahead_unless_the_sessions_are_shared(
    nats_cluster: NatsCluster,  # noqa: F811 (the fixture imported above)
) -> None:
    nc = await nats.connect(servers=nats_cluster.urls)
    try:
        js = nc.jetstream(timeout=10.0)
        await ensure_stream(js)
        for i in range(1600):
            await js.publish("vmf.v1.c.s.cue", str(i).encode())
        seen: list[int] = []

        async def feed_after_two_batches(name: str, shared: bool) -> int:
            """What is buffered 0.5 s after the logger took its second batch."""
            await js.add_consumer(STREAM, consumer_config(name, 30.0))
            feed = PullFeed(nc, STREAM, name, batch=500, ahead=2)
            await feed.start()
            try:
                for _ in range(2):
                    msgs = await feed.take(timeout_s=5.0)
                    assert len(msgs) == 500
                    seen.extend(int(m.data) for m in msgs)
                    if shared:
                        feed.shared()
                await asyncio.sleep(0.5)
                return feed.buffered
            finally:
                await feed.close()

        assert await feed_after_two_batches("ahead", shared=False) >= 500  # the third is here
        assert seen == list(range(1000))  # in stream order, nothing skipped or repeated
        # Told the sessions are shared: nothing asked for beyond what is being stored (the
        # second take found its batch already buffered by the first's read-ahead).
        assert await feed_after_two_batches("shared", shared=True) == 0
    finally:
        await nc.close()


class _Delivery:
    headers = None  # a message, not a status


class _Status:
    headers: ClassVar[dict[str, str]] = {"Status": "408", "Description": "Request Timeout"}


async def test_a_feed_tells_whether_messages_came_since_it_was_last_asked() -> None:
    """The lease renewal looks up (CONSUMER.INFO) only the consumers of silent feeds: on
    nats-server 2.9 a look-up can leave a delivering consumer rescanning its stream block at
    every delivery (docs/notes/nats_logger_profile.md). A status (a request's end) is not a
    message. Control: a feed that does not count its deliveries fails (shown by hand)."""
    feed = PullFeed(None, "S", "d", batch=10)  # type: ignore[arg-type]  # no connection used
    assert not feed.delivered_since_last_look()  # nothing yet: looked up
    await feed._on_msg(_Delivery())  # type: ignore[arg-type]
    await feed._on_msg(_Delivery())  # type: ignore[arg-type]
    assert feed.delivered_since_last_look()
    assert not feed.delivered_since_last_look()  # nothing since
    await feed._on_msg(_Status())  # type: ignore[arg-type]
    assert not feed.delivered_since_last_look()
