"""End-to-end receipts (issue 11, defect 4): a broker crash loses nothing.

The station deleted a session message from its outbox on the broker's PUBACK; with the logger
offline, a broker kill -9 then lost what the broker had acknowledged but not yet saved (6 of 41
and 3 of 41 in two runs). Now the station keeps each message until the logger's receipt says it
is stored, and sends again what has none. The control, with receipts off, still loses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.clinic.db import connect
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import MemoryOutbox, SqliteOutbox
from feedback.outputs.receipts import (
    Receipt,
    ReceiptError,
    Resend,
    decode,
    encode_receipt,
    encode_resend,
    holes,
    ranges,
)
from feedback.outputs.topics import MessageNumberer, Topics, encode
from tests.clinic.conftest import (
    ClinicBroker,
    run_station,
    running_logger,
    station_settings,
    wait_until,
)
from tests.clinic.test_logger import check_logged, session_ended
from tests.clinic.test_security import SecureBroker, client, secure_broker  # noqa: F401
from tests.conftest import running_mosquitto

# --- the receipt contract ---------------------------------------------------------------------


def test_ranges_and_holes() -> None:
    assert ranges([3, 1, 2, 7, 9, 10, 9]) == [(1, 3), (7, 7), (9, 10)]
    assert holes(2, [5, 6, 9]) == [(3, 4), (7, 8)]
    assert holes(4, []) == [] and holes(0, [1, 2]) == []


def test_receipts_round_trip() -> None:
    r = Receipt("S-1", 41, ((44, 50), (52, 52)))
    assert decode(encode_receipt(r)) == r
    q = Resend("S-1", ((42, 43), (51, 51)))
    assert decode(encode_resend(q)) == q


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids),
)
FIELDS = st.sampled_from(["through", "stored", "missing", "session", "type", "v"])


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=2048)
    | st.dictionaries(FIELDS, JSON_VALUES).map(
        lambda d: json.dumps({"v": 1, "type": "resend", "session": "S", **d}).encode()
    )
)
def test_decode_refuses_anything_else_with_its_own_error(payload: bytes) -> None:
    """Bytes from the network: a Receipt, a Resend or a ReceiptError, never another exception."""
    with contextlib.suppress(ReceiptError):
        assert isinstance(decode(payload), Receipt | Resend)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b"[" * 100_000,
        b'{"v":1,"type":"receipt","session":"S","through":1e400}',
        b'{"v":1,"type":"receipt","session":"S","through":9007199254740992}',
        b'{"v":1,"type":"resend","session":"S","missing":[[5,2]]}',
        b'{"v":1,"type":"resend","session":"S/../x","missing":[[1,2]]}',
        b"\xff\xfe",
        b"x" * 20_000,
    ],
)
def test_decode_hostile(payload: bytes) -> None:
    with pytest.raises(ReceiptError):
        decode(payload)


# --- the outbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_outbox_confirm_find_after(kind: str, tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "o.sqlite3") if kind == "sqlite" else MemoryOutbox()
    items = [box.append("t", b"%d" % i, False, session="S", msg_id=i) for i in range(1, 11)]
    other = box.append("t", b"other", False, session="T", msg_id=1)
    assert box.after(items[3].id) == items[4] and box.get(items[0].id) == items[0]
    assert [p.msg_id for p in box.find("S", [(2, 3), (9, 1000)])] == [2, 3, 9, 10]
    assert [p.msg_id for p in box.find("S", [(2, 3), (3, 4)])] == [2, 3, 4]  # overlapping
    assert box.confirm("S", 4, [(7, 8), (100, 2**53 - 1)]) == 6
    assert [p.msg_id for p in box.find("S", [(1, 2**53 - 1)])] == [5, 6, 9, 10]
    assert box.head() == items[4] and len(box) == 5
    assert box.confirm("S", 10) == 4 and box.head() == other and box.confirm("X", 99) == 0
    if isinstance(box, SqliteOutbox):
        box.close()
        again = SqliteOutbox(tmp_path / "o.sqlite3")
        assert again.recovered == 1 and again.head() == other


def test_outbox_from_before_receipts_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old-outbox.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, retain INTEGER NOT NULL DEFAULT 0);"
    )
    n = MessageNumberer("S-old")
    for i in range(3):
        body = encode(n.envelope("gap", {"from_index": i, "missing": 1}))
        old.execute("INSERT INTO outbox (topic, payload) VALUES ('vmf/v1/c/s/event', ?)", (body,))
    old.execute("INSERT INTO outbox (topic, payload) VALUES ('x', 'not json')")
    old.commit()
    old.close()
    box = SqliteOutbox(path)
    assert box.recovered == 4
    assert [(p.session, p.msg_id) for p in box.find("S-old", [(1, 9)])] == [
        ("S-old", 1), ("S-old", 2), ("S-old", 3)
    ]  # fmt: skip
    assert box.confirm("S-old", 3) == 3
    head = box.head()
    assert head is not None and head.session is None  # acked on PUBACK, as before


# --- the publisher against a real broker, with a hand-driven "logger" ---------------------------


class Peer:
    """Reads what the station publishes and writes receipts, as the clinic logger would."""

    def __init__(self, port: int, topics: Topics) -> None:
        self.port, self.topics = port, topics
        self.got: list[int] = []

    async def read(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            assert isinstance(m.payload, bytes)
            self.got.append(json.loads(m.payload)["msg_id"])


@contextlib.asynccontextmanager
async def station(url: str, topics: Topics, **kw: Any) -> Any:
    publisher = MqttPublisher(url, topics, client_id="st-r", receipts=True, **kw)
    task = asyncio.create_task(publisher.run())
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_message_stays_until_its_receipt_and_holes_are_resent(mosquitto: Any) -> None:
    topics = Topics("c1", "st-r")
    n = MessageNumberer("S-r")
    peer = Peer(mosquitto.port, topics)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="peer") as logger:
        await logger.subscribe(topics.event, qos=1)
        reader = asyncio.create_task(peer.read(logger))
        async with station(mosquitto.url, topics, receipt_timeout_s=30) as pub:
            await wait_until(lambda: pub.connected, 5, "connected")
            for i in range(6):
                pub.publish(topics.event, n.envelope("gap", {"from_index": i, "missing": 1}))
            await wait_until(lambda: len(peer.got) == 6, 5, "six messages")
            await asyncio.sleep(0.3)
            assert pub.backlog == 6 and pub.stats.published == 0  # PUBACKed, not receipted
            receipt_topic = f"{topics.base}/receipt"
            await logger.publish(receipt_topic, encode_receipt(Receipt("S-r", 2, ((5, 5),))))
            await wait_until(lambda: pub.backlog == 3, 5, "the receipt")
            assert pub.stats.published == 3
            await logger.publish(receipt_topic, encode_resend(Resend("S-r", ((3, 4),))))
            await wait_until(lambda: peer.got[6:] == [3, 4], 5, "the resend")
            await logger.publish(receipt_topic, b'{"a":' * 1000 + b"1" + b"}" * 1000)
            await logger.publish(receipt_topic, encode_receipt(Receipt("S-r", 6)))
            assert await pub.flush(5)
            assert pub.stats.bad_receipts == 1 and pub.stats.resent == 2
        reader.cancel()


async def test_no_receipt_sends_again_with_backoff(mosquitto: Any) -> None:
    topics = Topics("c1", "st-r")
    n = MessageNumberer("S-t")
    peer = Peer(mosquitto.port, topics)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="peer") as logger:
        await logger.subscribe(topics.event, qos=1)
        reader = asyncio.create_task(peer.read(logger))
        async with station(mosquitto.url, topics, receipt_timeout_s=0.5) as pub:
            for i in range(3):
                pub.publish(topics.event, n.envelope("gap", {"from_index": i, "missing": 1}))
            await wait_until(lambda: pub.stats.receipt_timeouts >= 3, 10, "three timeouts")
            await wait_until(lambda: len(peer.got) >= 6, 5, "three probes")
            assert peer.got[:6] == [1, 2, 3, 1, 1, 1]  # a probe: the oldest, alone
            assert pub._timeout_s >= 4.0  # 0.5 doubled at each timeout
            # The logger answers (it has 1): everything else without a receipt follows, in order.
            await logger.publish(f"{topics.base}/receipt", encode_receipt(Receipt("S-t", 1)))
            await wait_until(lambda: peer.got[-2:] == [2, 3], 5, "the rest")
            assert pub._timeout_s == 0.5  # back to the start once receipts come
            await logger.publish(f"{topics.base}/receipt", encode_receipt(Receipt("S-t", 3)))
            assert await pub.flush(5)
        reader.cancel()


# --- the whole chain: station, Mosquitto killed -9, logger offline, database --------------------


class KillableBroker(ClinicBroker):
    """The clinic broker, killed with SIGKILL (no chance to save), restarted on the same port
    and store. `autosave` as in deploy/mosquitto (every 10 s); None: never saved before the
    kill (the default autosave_interval, 30 min)."""

    autosave: int | None = None

    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__(binary, workdir)
        if self.autosave is not None:
            self.conf.write_text(self.conf.read_text() + f"autosave_interval {self.autosave}\n")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None


class DeployBroker(KillableBroker):
    autosave = 10


class NoPersistenceBroker(KillableBroker):
    def __init__(self, binary: str, workdir: Path) -> None:
        super().__init__(binary, workdir)
        self.conf.write_text(self.conf.read_text().replace("persistence true", "persistence false"))


BROKERS: dict[str, type[KillableBroker]] = {
    "never-saved": KillableBroker,
    "autosave-10s": DeployBroker,
    "no-persistence": NoPersistenceBroker,
}


@pytest.fixture(params=sorted(BROKERS))
def killable_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KillableBroker]:
    with running_mosquitto(BROKERS[request.param], tmp_path) as broker:
        yield broker


def query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    if "://" not in db_url and not Path(db_url).exists():
        return []
    db = connect(db_url)
    try:
        return db.query(sql)
    except Exception:
        return []  # not migrated yet
    finally:
        db.close()


async def kill_9_mid_session(
    broker: KillableBroker, db_url: str, tmp_path: Path, *, receipts: bool
) -> tuple[dict[str, Any], int]:
    """Logger online, then offline; the broker killed -9 and restarted mid-session while the
    station publishes; then the logger back. Returns the station's report and the logger's
    resend requests."""
    station_id = "st-kill"
    settings = station_settings(
        station_id, **{"session.pain_before": 4, "protocol.reps": 5, "mqtt.receipts": receipts}
    )
    access = BrokerAccess.from_url(broker.url)
    async with running_logger(access, db_url):
        session = asyncio.create_task(run_station(settings, broker.url, tmp_path))
        cues = "SELECT count(*) FROM cues"
        await wait_until(lambda: (query(db_url, cues) or [(0,)])[0][0] >= 3, 15, "first cues")
    await asyncio.sleep(2.0)  # the logger is offline; the station publishes, the broker queues
    broker.kill9()
    await asyncio.sleep(1.0)
    broker.start()
    await asyncio.sleep(2.0)  # the station reconnects; the logger is still offline
    assert not session.done()
    async with running_logger(access, db_url) as logger:
        report = await session
        sid = report["session_id"]
        if receipts:
            await wait_until(lambda: session_ended(db_url, sid), 20, "session_end")
        else:
            await asyncio.sleep(2.0)
        await asyncio.sleep(0.5)
        return report, logger.stats.resend_requests


async def test_broker_kill_9_with_the_logger_offline_loses_nothing(
    killable_broker: KillableBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    report, _ = await kill_9_mid_session(killable_broker, db_url, tmp_path, receipts=True)
    assert report["mqtt_flushed"] and report["mqtt_backlog_at_end"] == 0
    # Every session message exactly once, in order (seq = arrival), the tables as the station's.
    check_logged(db_url, report, tmp_path / "st-kill.db", periods=5, redelivered_ok=True)


async def test_broker_kill_9_to_postgres_loses_nothing(postgres_url: str, tmp_path: Path) -> None:
    with running_mosquitto(DeployBroker, tmp_path) as broker:
        report, _ = await kill_9_mid_session(broker, postgres_url, tmp_path, receipts=True)
    assert report["mqtt_flushed"]
    check_logged(postgres_url, report, tmp_path / "st-kill.db", periods=5, redelivered_ok=True)


async def test_control_without_receipts_loses_and_the_logger_asks_for_the_hole(
    tmp_path: Path,
) -> None:
    """Negative control: deletion on the broker's PUBACK (receipts off), the same kill -9. What
    the broker acknowledged and had not saved is gone; the logger sees the hole in msg_id and
    asks for it (a station without receipts no longer has it)."""
    db_url = str(tmp_path / "clinic.db")
    with running_mosquitto(KillableBroker, tmp_path) as broker:
        report, asked = await kill_9_mid_session(broker, db_url, tmp_path, receipts=False)
    stored = [i for (i,) in query(db_url, "SELECT msg_id FROM messages ORDER BY msg_id")]
    sent = report["mqtt_published"]
    lost = sorted(set(range(1, sent + 1)) - set(stored))
    print(f"control without receipts: {len(lost)} of {sent} session messages lost: {lost}")
    assert lost, "the control lost nothing: the kill -9 test would not see a loss either"
    assert asked >= 1


async def test_only_loggers_write_receipts(
    secure_broker: SecureBroker,  # noqa: F811 (the fixture imported above)
) -> None:
    """A receipt makes a station delete what it holds: a station account may neither write one
    (to itself or another) nor read another station's."""
    a, b = Topics("clinic-demo", "st-a"), Topics("clinic-demo", "st-b")
    seen: list[tuple[str, bytes]] = []
    async with (
        client(secure_broker, "clinic-demo/st-a") as st_a,
        client(secure_broker, "clinic-demo/st-b") as st_b,
        client(secure_broker, "logger") as logger,
    ):
        await st_a.subscribe(f"{a.base}/receipt", qos=1)
        await st_a.subscribe(f"{b.base}/receipt", qos=1)  # not its own: refused by the ACL

        async def watch() -> None:
            async for m in st_a.messages:
                seen.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]

        task = asyncio.create_task(watch())
        forged = encode_receipt(Receipt("S-x", 99))
        await st_b.publish(f"{a.base}/receipt", forged, qos=1)
        await st_a.publish(f"{a.base}/receipt", forged, qos=1)
        await logger.publish(f"{b.base}/receipt", b"for-b", qos=1)
        await logger.publish(f"{a.base}/receipt", b"for-a", qos=1)
        await wait_until(lambda: any(p == b"for-a" for _, p in seen), 5, "the logger's")
        await asyncio.sleep(0.3)
        task.cancel()
    assert seen == [(f"{a.base}/receipt", b"for-a")]


def test_receipts_follow_their_json_schemas() -> None:
    from feedback.clinic.validation import validators

    for payload, kind in (
        (encode_receipt(Receipt("S-1", 41, ((44, 50),))), "receipt"),
        (encode_receipt(Receipt("S-1", 0)), "receipt"),
        (encode_resend(Resend("S-1", ((42, 43),))), "resend"),
    ):
        assert not list(validators()[kind].iter_errors(json.loads(payload)))
    bad = json.loads(encode_receipt(Receipt("S-1", 1)))
    bad["stored"] = [[1, 2, 3]]
    assert list(validators()["receipt"].iter_errors(bad))
    with pytest.raises(ReceiptError):
        decode(json.dumps(bad).encode())


@pytest.mark.parametrize("receipts", [True, False])
async def test_a_lost_shared_subscription_loses_nothing_even_without_mqtt5(
    receipts: bool, clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    """Mosquitto 2.0 restores the logger's session after a restart but not its shared
    subscription: until the logger subscribes again, a publish reaches nobody. Over MQTT 3.1.1
    the station cannot even tell ("no matching subscribers" is MQTT 5). With receipts it sends
    again after the timeout; the control, deleting on PUBACK, has lost them."""
    db_url = str(tmp_path / "clinic.db")
    access = BrokerAccess.from_url(clinic_broker.url)
    async with running_logger(access, db_url):
        pass  # subscribed once; its session outlives it
    clinic_broker.stop()
    clinic_broker.start()
    topics = Topics("clinic-demo", "st-lost")
    n = MessageNumberer("S-lost")
    publisher = MqttPublisher(
        clinic_broker.url, topics, client_id="st-lost", receipts=receipts,
        receipt_timeout_s=0.5, outbox=SqliteOutbox(tmp_path / "outbox.sqlite3"),
    )  # fmt: skip
    runner = asyncio.create_task(publisher.run())
    try:
        for i in range(5):
            publisher.publish(topics.event, n.envelope("gap", {"from_index": i, "missing": 1}))
        await wait_until(lambda: publisher.stats.sent >= 5, 10, "five publishes")
        async with running_logger(access, db_url):
            if receipts:
                assert await publisher.flush(15)
            else:
                await asyncio.sleep(2.0)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    stored = [i for (i,) in query(db_url, "SELECT msg_id FROM messages ORDER BY seq")]
    assert stored == ([1, 2, 3, 4, 5] if receipts else [])


async def test_the_logger_asks_for_a_hole_and_the_station_fills_it(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    """Message 3 vanished on the way (as in a broker crash); 4 arrived. The logger sees the hole
    and asks; the station answers from its outbox, long before its receipt timeout."""
    db_url = str(tmp_path / "clinic.db")
    topics = Topics("clinic-demo", "st-hole")
    n = MessageNumberer("S-hole")
    bodies = [encode(n.envelope("gap", {"from_index": i, "missing": 1})) for i in range(4)]
    access = BrokerAccess.from_url(clinic_broker.url)
    async with (
        running_logger(access, db_url) as logger,
        station(clinic_broker.url, topics, receipt_timeout_s=600) as pub,
    ):
        await wait_until(lambda: pub.connected, 5, "the station")
        await asyncio.sleep(0.3)  # subscribed to its receipts
        # Sent, as far as the station knows (the cursor is past them); 3 never reached the broker.
        for i, body in enumerate(bodies, start=1):
            pub._cursor = pub.outbox.append(
                topics.event, body, False, session="S-hole", msg_id=i
            ).id
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as wire:
            for body in (bodies[0], bodies[1], bodies[3]):
                await wire.publish(topics.event, body, qos=1)
        assert await pub.flush(10)
        assert logger.stats.resend_requests >= 1 and pub.stats.resend_requests >= 1
        assert pub.stats.receipt_timeouts == 0
    stored = [i for (i,) in query(db_url, "SELECT msg_id FROM messages ORDER BY msg_id")]
    assert stored == [1, 2, 3, 4]
