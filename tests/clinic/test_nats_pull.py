"""The NATS logger's pull feed against a real three-node cluster: it reads ahead while a batch
is stored, and stops reading ahead once told another instance shares the sessions."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

import nats
from nats.aio.msg import Msg

from feedback.clinic import nats_pull
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


class FakeClient:
    """What the feeds' direct path meets of a nats-py client: its message entry point."""

    def __init__(self) -> None:
        self.stats = {"in_msgs": 0, "in_bytes": 0}
        self.through_nats_py: list[tuple[int, bytes]] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        self.through_nats_py.append((sid, headers))


async def test_deliveries_skip_nats_py_and_statuses_do_not() -> None:
    """A delivery to a feed's inbox (with the MQTT gateway's headers) reaches the feed at once,
    without its headers; a status (a request's 408, a heartbeat) and another subscription's
    messages go through nats-py, where the feed's callback reads the status. Negative control:
    with the status test taken out of `process_msg`, the 408 is taken for a delivery (shown
    by editing it out: the first assertion on `through_nats_py` fails)."""
    nc = FakeClient()
    got: list[Msg] = []
    nats_pull._direct(cast(Any, nc))[7] = got.append
    process = nc._process_msg  # the direct path, installed on this client
    reply = b"$JS.ACK.VMFP.g-p0.1.10.3.1764615000123456789.5"
    await process(7, b"_INBOX.x", reply, b"{}", b"NATS/1.0\r\nNmqtt-Pub: 1\r\n\r\n")
    await process(7, b"_INBOX.x", b"", b"", b"NATS/1.0 408 Request Timeout\r\n\r\n")
    await process(8, b"other", b"", b"x", b"")
    assert nc.through_nats_py == [(7, b"NATS/1.0 408 Request Timeout\r\n\r\n"), (8, b"")]
    assert [(m.subject, m.reply, m.data, m.headers) for m in got] == [
        ("_INBOX.x", reply.decode(), b"{}", None)
    ]
    assert nc.stats == {"in_msgs": 1, "in_bytes": 2}


def test_written_against_the_pinned_nats_py() -> None:
    """An upgrade of nats-py turns the direct path off (nats-py's own path instead) and fails
    here, so that `Client._process_msg` is read again before NATS_PY is raised."""
    from nats.aio.client import __version__

    assert __version__ == nats_pull.NATS_PY
    assert nats_pull.DIRECT


async def test_a_header_block_cut_short_goes_to_nats_py_not_to_the_feed() -> None:
    """Hostile or truncated header bytes on a feed's inbox: the direct path must neither raise
    in nats-py's read loop nor take them for a delivery; nats-py's own parser gets them.
    Negative control: indexing the byte after "NATS/1.0" (the first version) raises
    IndexError on the first of these, shown by putting the index back."""
    nc = FakeClient()
    got: list[Msg] = []
    nats_pull._direct(cast(Any, nc))[7] = got.append
    process = nc._process_msg
    for headers in (b"NATS/1.0", b"NATS/1", b"\x00" * 8 + b"x", b"NATS/1.0 40"):
        await process(7, b"_INBOX.x", b"", b"{}", headers)
    assert got == []
    assert [h for _, h in nc.through_nats_py] == [
        b"NATS/1.0",
        b"NATS/1",
        b"\x00" * 8 + b"x",
        b"NATS/1.0 40",
    ]
