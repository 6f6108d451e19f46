"""The cue fast lane: session messages go on the wire from `publish` itself, several in flight,
and none leaves the outbox before its own PUBACK, even when the broker dies with them in flight."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from feedback.outputs import paho_direct
from feedback.outputs.mqtt_publisher import MAX_IN_FLIGHT, MqttPublisher
from feedback.outputs.outbox import SqliteOutbox
from feedback.outputs.topics import MessageNumberer, Topics
from tests.conftest import MosquittoProcess

T = Topics("c1", "st-fast")


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[MqttPublisher]:
    task = asyncio.create_task(publisher.run())
    try:
        await wait_for(lambda: publisher.connected, "never connected")
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def gap(n: MessageNumberer, i: int) -> dict[str, Any]:
    return n.envelope("gap", {"from_index": i, "missing": 1})


async def test_publish_puts_messages_on_the_wire_without_waiting_for_pubacks(
    mosquitto: MosquittoProcess,
) -> None:
    numberer = MessageNumberer("S-fast")
    publisher = MqttPublisher(mosquitto.url, T, client_id="st-fast")
    received: list[int] = []
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub, running(publisher):
        await sub.subscribe(f"{T.base}/#", qos=1)

        async def collect() -> None:
            async for msg in sub.messages:
                received.append(json.loads(msg.payload)["msg_id"])  # type: ignore[arg-type,unused-ignore]

        collector = asyncio.create_task(collect())
        publisher.publish(T.event, gap(numberer, 0))
        # Sent in publish's own turn: no hop to another task, no wait for an earlier PUBACK.
        assert publisher.stats.sent == 1
        for i in range(1, 100):
            publisher.publish(T.event, gap(numberer, i))
        # Without yielding once, a whole window is out, and the rest waits in the outbox.
        assert publisher.stats.sent == MAX_IN_FLIGHT > 1
        assert publisher.backlog == 100
        assert await publisher.flush(10)
        await wait_for(lambda: len(received) >= 100, "not all received")
        collector.cancel()
    assert received == list(range(1, 101))  # in order
    assert publisher.stats.published == 100 and publisher.stats.resent == 0


async def test_a_broker_crash_with_messages_in_flight_loses_nothing(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    numberer = MessageNumberer("S-crash")
    outbox = SqliteOutbox(tmp_path / "o.sqlite3")
    publisher = MqttPublisher(mosquitto.url, T, client_id="st-crash", outbox=outbox)
    async with running(publisher):
        for i in range(200):
            publisher.publish(T.event, gap(numberer, i))
        await asyncio.sleep(0.003)  # some acknowledged, a window in flight, the rest waiting
        assert mosquitto.proc is not None
        mosquitto.proc.kill()  # SIGKILL: PUBACKs of the messages in flight never come
        mosquitto.proc.wait()
        await wait_for(lambda: not publisher.connected, "crash not noticed")
        # Only acknowledged messages left the outbox: the rest is there, in order.
        assert publisher.backlog == 200 - publisher.stats.published > 0
        first = outbox.head()
        assert first is not None and json.loads(first.payload)["msg_id"] == (
            publisher.stats.published + 1
        )
        mosquitto.start()
        assert await publisher.flush(15)  # the reconnect sends the unacknowledged again
    outbox.close()
    assert publisher.stats.published == 200
    assert len(SqliteOutbox(tmp_path / "o.sqlite3")) == 0


async def _idle_polls_after_publishing(
    url: str, monkeypatch: pytest.MonkeyPatch, *, direct: bool, drop_stale_watch: bool = True
) -> int:
    """Event-loop polls that find the socket writable, in 0.3 s of quiet after 20 cues."""
    import selectors

    numberer = MessageNumberer("S-spin")
    publisher = MqttPublisher(url, T, client_id="st-spin")
    monkeypatch.setattr(paho_direct, "DIRECT", direct)  # False: paho's own send path
    if not drop_stale_watch:  # the negative control: the publisher as it was
        publisher._drop_stale_write_watch = lambda client: None  # type: ignore[method-assign]
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    polls = 0
    select = selector.select

    def counting(timeout: float | None = None) -> list[tuple[Any, int]]:
        nonlocal polls
        ready: list[tuple[Any, int]] = select(timeout)
        polls += any(events & selectors.EVENT_WRITE for _, events in ready)
        return ready

    async with running(publisher):
        for i in range(20):
            publisher.publish(T.event, gap(numberer, i))
            await asyncio.sleep(0.005)
        assert await publisher.flush(10)
        selector.select = counting
        try:
            await asyncio.sleep(0.3)
        finally:
            selector.select = select
    return polls


async def test_sending_from_publish_leaves_no_write_watch_spinning_the_loop(
    mosquitto: MosquittoProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho's own path: aiomqtt adds paho's write watch at the loop's next turn, after
    `publish` has written everything itself: left there, the always-writable socket wakes the
    loop on every turn (a busy loop: 640,000 polls in a 10 s session, three times the CPU).
    paho_direct asks for no watch at all."""
    url = mosquitto.url
    assert await _idle_polls_after_publishing(url, monkeypatch, direct=True) < 20
    assert await _idle_polls_after_publishing(url, monkeypatch, direct=False) < 20
    spinning = await _idle_polls_after_publishing(
        url, monkeypatch, direct=False, drop_stale_watch=False
    )
    assert spinning > 1000
