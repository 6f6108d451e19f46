"""Store-and-forward: the outbox persists before publishing and survives broker and station loss."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import aiomqtt
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import MemoryOutbox, Outbox, SqliteOutbox
from feedback.outputs.topics import MessageNumberer, Topics


def test_sqlite_outbox_keeps_order_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = SqliteOutbox(path)
    items = [box.append(f"t/{i}", f"m{i}".encode(), i == 0) for i in range(5)]
    box.ack(items[0])
    box.close()
    again = SqliteOutbox(path)
    assert again.recovered == 4 and len(again) == 4
    head = again.head()
    assert head is not None and (head.topic, head.payload, head.retain) == ("t/1", b"m1", False)
    seen = []
    while (item := again.head()) is not None:
        seen.append(item.payload)
        again.ack(item)
    assert seen == [b"m1", b"m2", b"m3", b"m4"]
    again.close()
    assert len(SqliteOutbox(path)) == 0


def test_memory_outbox_has_the_same_behaviour() -> None:
    box = MemoryOutbox()
    a, b = box.append("t", b"a", False), box.append("t", b"b", True)
    assert box.head() == a and len(box) == 2
    box.ack(a)
    assert box.head() == b and len(box) == 1


async def _collect(url_port: int, topic: str, want: int, out: list[dict[str, Any]]) -> None:
    async with aiomqtt.Client("127.0.0.1", url_port, identifier="collector") as sub:
        await sub.subscribe(topic, qos=1)
        async for msg in sub.messages:
            out.append(json.loads(msg.payload))  # type: ignore[arg-type,unused-ignore]
            if len(out) >= want:
                return


async def test_outbox_survives_broker_outage_and_station_restart(
    mosquitto: Any, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite3"
    topics = Topics("c1", "st-restart")
    numberer = MessageNumberer("S-restart")
    mosquitto.stop()
    # Station 1: the broker is down; every message is in the outbox when publish() returns,
    # and on disk once the outbox's writer thread has caught up (sync), off the event loop.
    first = MqttPublisher(mosquitto.url, topics, client_id="st", outbox=SqliteOutbox(path))
    runner = asyncio.create_task(first.run())
    for i in range(20):
        first.publish(topics.event, numberer.envelope("gap", {"from_index": i, "missing": 1}))
    assert first.outbox.sync(5)
    on_disk = sqlite3.connect(path).execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert on_disk == 20 and first.backlog == 20
    await asyncio.sleep(0.5)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    first.outbox.close()  # the station process ends with its backlog undelivered

    # Station 2 (a restart) finds the backlog and delivers it, in order, once the broker is back.
    mosquitto.start()
    received: list[dict[str, Any]] = []
    collector = asyncio.create_task(_collect(mosquitto.port, f"{topics.base}/#", 25, received))
    await asyncio.sleep(0.3)
    second = MqttPublisher(mosquitto.url, topics, client_id="st", outbox=SqliteOutbox(path))
    for i in range(20, 25):
        second.publish(topics.event, numberer.envelope("gap", {"from_index": i, "missing": 1}))
    runner = asyncio.create_task(second.run())
    await asyncio.wait_for(collector, 10)
    assert await second.flush(5)
    runner.cancel()
    assert [m["msg_id"] for m in received] == list(range(1, 26))
    assert second.outbox.sync(5)  # the acks' deletes, like the appends, go through the writer
    assert sqlite3.connect(path).execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


async def test_live_snapshots_flow_while_a_session_message_is_held(mosquitto: Any) -> None:
    """Nobody subscribes to the session lane: its message stays held at the head of the outbox
    (MQTT 5 "no matching subscribers"), and the live lane, in its own task, keeps going."""
    topics = Topics("c1", "st-live")
    numberer = MessageNumberer("S-live")
    publisher = MqttPublisher(
        mosquitto.url,
        topics,
        client_id="st-live",
        outbox=MemoryOutbox(),
        mqtt5=True,
        hold_without_subscriber=True,
    )
    runner = asyncio.create_task(publisher.run())
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="viewer") as viewer:
            await viewer.subscribe(topics.live, qos=0)
            gap = numberer.envelope("gap", {"from_index": 0, "missing": 1})
            publisher.publish(topics.event, gap)
            async with asyncio.timeout(10):
                while publisher.stats.held_no_subscriber == 0:
                    await asyncio.sleep(0.01)
            for i in range(5):
                publisher.publish_live(topics.live, {"type": "live", "n": i})
                async with asyncio.timeout(10):
                    async for msg in viewer.messages:
                        if json.loads(msg.payload)["n"] == i:  # type: ignore[arg-type,unused-ignore]
                            break
            # Every snapshot arrived while the event was still held (and retried).
            assert publisher.backlog == 1 and publisher.stats.published == 0
            assert publisher.stats.live_published == 5
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["S1", "S2"])),
        st.tuples(
            st.just("confirm"),
            st.sampled_from(["S1", "S2"]),
            st.integers(0, 30),
            st.lists(st.tuples(st.integers(1, 40), st.integers(0, 5)), max_size=3),
        ),
        st.tuples(st.just("ack_head")),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_outbox_agrees_with_a_plain_list(ops: list[tuple[Any, ...]]) -> None:
    """Appends, receipts (through + ranges) and PUBACK acks in any order: the outbox holds
    exactly what a plain list model holds, in order, and so does the file when reopened."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "o.sqlite3"
        boxes: list[Outbox] = [SqliteOutbox(path), MemoryOutbox()]
        model: list[tuple[str, int]] = []
        next_id = {"S1": 0, "S2": 0}
        for op in ops:
            if op[0] == "append":
                next_id[op[1]] += 1
                model.append((op[1], next_id[op[1]]))
                for box in boxes:
                    box.append("t", b"x", False, session=op[1], msg_id=next_id[op[1]])
            elif op[0] == "confirm":
                _, session, through, pairs = op
                rs = [(a, a + w) for a, w in pairs]
                gone = {
                    (s, m) for s, m in model
                    if s == session and (m <= through or any(a <= m <= b for a, b in rs))
                }  # fmt: skip
                model = [k for k in model if k not in gone]
                for box in boxes:
                    assert box.confirm(session, through, rs) == len(gone)
            elif model:
                model.pop(0)
                for box in boxes:
                    head = box.head()
                    assert head is not None
                    box.ack(head)
            for box in boxes:
                assert _walk(box) == model and len(box) == len(model)
        boxes[0].close()
        assert _walk(SqliteOutbox(path)) == model


def _walk(box: Outbox) -> list[tuple[str, int]]:
    out, item = [], box.head()
    while item is not None:
        assert item.session is not None and item.msg_id is not None
        out.append((item.session, item.msg_id))
        item = box.after(item.id)
    return out


def _rows_in_file(path: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [bytes(r[0]) for r in db.execute("SELECT payload FROM outbox ORDER BY id")]


async def test_in_an_event_loop_rows_reach_the_writer_at_the_next_turn(tmp_path: Path) -> None:
    """Not in `append` itself: waking the writer there makes the cue's socket write wait for
    it (bench_latency). `queued` counts them meanwhile, and `sync` hands them over first."""
    path = tmp_path / "o.sqlite3"
    box = SqliteOutbox(path)
    writer = box._writer
    first = box.append("t/1", b"m1", False)
    box.append("t/2", b"m2", False)
    box.ack(first)  # a delete, in order behind its insert
    assert writer._ops.qsize() == 0 and box.queued == 3  # held, counted
    await asyncio.sleep(0)  # the loop's next turn
    assert not writer._held
    assert box.sync(5)
    assert _rows_in_file(path) == [b"m2"]
    box.append("t/3", b"m3", False)
    assert box.sync(5)  # without a turn of the loop in between
    assert _rows_in_file(path) == [b"m2", b"m3"]
    box.close()


async def test_a_sync_that_did_not_hand_over_would_miss_rows(tmp_path: Path) -> None:
    """The negative control of the test above: without the hand-over in `sync`, the rows and
    the sync marker itself stay held, and the sync fails."""
    path = tmp_path / "o.sqlite3"
    box = SqliteOutbox(path)
    box._writer.hand_over = lambda: None  # type: ignore[method-assign]
    box.append("t/1", b"m1", False)
    assert not box.sync(0.2)
    assert _rows_in_file(path) == []
    type(box._writer).hand_over(box._writer)  # let it go, to close cleanly
    box.close()
    assert _rows_in_file(path) == [b"m1"]


def test_outside_an_event_loop_rows_go_to_the_writer_at_once(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.sqlite3")
    box.append("t/1", b"m1", False)
    assert not box._writer._held
    box.close()
