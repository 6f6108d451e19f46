"""Station → Mosquitto → clinic logger → database, end to end, with the failures a clinic sees."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import hypothesis
import pytest
from hypothesis import strategies as st

from feedback.clinic.db import Backend, connect
from feedback.clinic.migrations import LATEST, current_version, migrate
from feedback.clinic.store import ClinicStore, Incoming
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.topics import MessageNumberer, Topics, encode
from tests.clinic.conftest import (
    ClinicBroker,
    run_station,
    running_logger,
    sqlite_rows,
    station_settings,
    wait_until,
)


def logged(db: Backend, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return db.query(sql, params)


def session_ended(db_url: str, session_id: str) -> bool:
    db = connect(db_url)
    try:
        rows = db.query("SELECT ended_at FROM sessions WHERE session_id = ?", (session_id,))
        return bool(rows) and rows[0][0] is not None
    finally:
        db.close()


def check_logged(
    db_url: str,
    report: dict[str, Any],
    station_db: Path,
    *,
    periods: int = 3,
    redelivered_ok: bool = False,
) -> None:
    """Every lossless message exactly once, in order, and the tables agree with the station."""
    sid = report["session_id"]
    db = connect(db_url)
    try:
        ids = [r[0] for r in db.query(
            "SELECT msg_id FROM messages WHERE session_id = ? ORDER BY seq", (sid,)
        )]  # fmt: skip
        assert ids == list(range(1, report["mqtt_published"] + 1))
        (patient, side, pain_before, ended, summary, prescribed) = db.query(
            "SELECT patient, side, pain_before, ended_at, summary_json, reps_prescribed"
            " FROM sessions WHERE session_id = ?",
            (sid,),
        )[0]
        assert (patient, side, pain_before, prescribed) == ("P-0001", "right", 4, periods)
        assert ended is not None and json.loads(summary)["reps"] == report["reps"]
        reps = db.query(
            "SELECT period, achieved, peak_pct_mvc, hold_s, vm_vl_ratio, onset_diff_ms"
            " FROM reps WHERE session_id = ? ORDER BY period",
            (sid,),
        )
        assert [r[0] for r in reps] == list(range(1, periods + 1))
        assert sum(r[1] for r in reps) == report["reps"] >= periods - 1
        for _, achieved, peak, hold, ratio, onset in reps:
            if achieved:  # the simulator contracts at 45 % MVC, VL 30 ms after VM, equal size
                assert 35 < peak < 70 and hold >= 1.0
                assert 0.8 < ratio < 1.25 and 0 < onset < 80
        (cues,) = db.query("SELECT count(*) FROM cues WHERE session_id = ?", (sid,))[0]
        station_cues = sqlite_rows(station_db, "SELECT count(*) FROM events WHERE kind = 'cue'")
        assert cues == station_cues[0][0] > 0
        (live,) = db.query("SELECT sum(count) FROM live_seconds WHERE session_id = ?", (sid,))[0]
        assert live > 0
        reasons = [r for (r,) in db.query("SELECT reason FROM quarantine")]
        assert reasons == []  # copies (redelivered, sent again) are dropped, not quarantined
        if not redelivered_ok:  # nothing went wrong on the way: not even a copy
            copies = db.query("SELECT duplicates FROM session_owners WHERE session_id = ?", (sid,))
            assert copies == [(0,)]
        assert db.query("SELECT state FROM stations") == [("idle",)]
    finally:
        db.close()


async def logged_session(broker_url: str, db_url: str, tmp_path: Path, device: str) -> None:
    station = "st-" + secrets.token_hex(3)
    settings = station_settings(station, **{"session.pain_before": 4})
    async with running_logger(BrokerAccess.from_url(broker_url), db_url):
        report = await run_station(settings, broker_url, tmp_path, device)
        await wait_until(lambda: session_ended(db_url, report["session_id"]), 10, "session_end")
        await asyncio.sleep(0.3)  # anything late (a duplicate) would land now
    check_logged(db_url, report, tmp_path / f"{station}.db")


async def test_station_to_sqlite(clinic_broker: ClinicBroker, tmp_path: Path) -> None:
    await logged_session(clinic_broker.url, str(tmp_path / "clinic.db"), tmp_path, "sim?speed=max")


async def test_station_to_postgres(
    clinic_broker: ClinicBroker, postgres_url: str, tmp_path: Path
) -> None:
    await logged_session(clinic_broker.url, postgres_url, tmp_path, "sim?speed=max")


def test_migrations_are_idempotent(tmp_path: Path, postgres_url: str) -> None:
    for url in (str(tmp_path / "m.db"), postgres_url):
        db = connect(url)
        assert migrate(db) == list(range(1, LATEST + 1)) and migrate(db) == []
        assert current_version(db) == LATEST
        db.close()


async def test_bad_and_replayed_messages_are_quarantined(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    topics = Topics("clinic-demo", "st-q")
    gap = encode(MessageNumberer("S-q").envelope("gap", {"from_index": 5, "missing": 3}))
    forged = gap.replace(b'"missing":3', b'"missing":9')
    wrong_schema = encode(MessageNumberer("S-q2").envelope("gap", {"from_index": -1, "missing": 1}))
    sends = [
        (topics.event, gap),
        (topics.event, b'{"v": 1, "type": "gap", '),  # malformed JSON
        (topics.event, wrong_schema),
        (topics.event, b"{" + b" " * 100_000 + b"}"),  # oversized (broker allows 256 KiB)
        (topics.cue, gap),  # right message, wrong topic
        (topics.event, gap),  # replayed byte for byte
        (topics.event, forged),  # same (session, msg_id), other content
    ]
    access = BrokerAccess.from_url(clinic_broker.url)
    async with running_logger(access, db_url) as logger:
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as pub:
            for topic, payload in sends:
                await pub.publish(topic, payload, qos=1)
        await wait_until(lambda: logger.stats.received == len(sends), 10, "all messages")
    db = connect(db_url)
    reasons = [r for (r,) in db.query("SELECT reason FROM quarantine ORDER BY id")]
    assert len(reasons) == 5, reasons  # the identical copy is dropped and counted
    assert logger.stats.totals is not None and logger.stats.totals.duplicates == 1
    for expected, reason in zip(
        ["not JSON", "schema gap: from_index", "exceeds the limit", "belongs on .../event",
         "different content"],
        reasons,
        strict=True,
    ):  # fmt: skip
        assert expected in reason
    assert db.query("SELECT session_id, msg_id, type FROM events") == [("S-q", 1, "gap")]
    sizes = db.query("SELECT size, length(payload) FROM quarantine WHERE reason LIKE '%limit%'")
    assert sizes == [(100_002, 4096)]  # kept: the head of it and the hash of the whole


async def test_two_loggers_share_the_load_without_duplicates(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    access = BrokerAccess.from_url(clinic_broker.url)
    topics = Topics("clinic-demo", "st-share")
    numberer = MessageNumberer("S-share")
    async with running_logger(access, db_url, "a") as a, running_logger(access, db_url, "b") as b:
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as pub:
            for i in range(400):
                body = numberer.envelope("gap", {"from_index": i, "missing": 1})
                await pub.publish(topics.event, encode(body), qos=1)
        await wait_until(lambda: a.stats.received + b.stats.received == 400, 15, "400 messages")
    assert a.stats.received > 0 and b.stats.received > 0  # both instances took a share
    db = connect(db_url)
    assert db.query("SELECT count(*), count(DISTINCT msg_id) FROM events") == [(400, 400)]
    assert db.query("SELECT count(*) FROM quarantine") == [(0,)]


NESTED = b'{"a":' * 1000 + b"1" + b"}" * 1000  # json.loads raises RecursionError on it


def test_store_quarantines_whatever_one_message_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure with one message (not only ValueError) quarantines that message; the rest
    of the batch is stored."""
    import feedback.clinic.store as store_module

    store = ClinicStore(str(tmp_path / "clinic.db"))
    topics = Topics("c1", "st-1")
    good = MessageNumberer("S-good")
    real_check = store_module.check
    hostile: dict[bytes, BaseException] = {
        b'{"memory": 1}': MemoryError(),
        b'{"unicode": 1}': UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        b'{"key": 1}': KeyError("type"),
        b'{"recursion": 1}': RecursionError("maximum recursion depth exceeded"),
    }

    def check(topic: str, payload: bytes, max_bytes: int = 65536) -> Any:
        if payload in hostile:
            raise hostile[payload]
        return real_check(topic, payload, max_bytes)

    monkeypatch.setattr(store_module, "check", check)
    batch = [Incoming(topics.event, NESTED, 1.0)]
    batch += [Incoming(topics.event, p, 1.0) for p in hostile]
    batch += [
        Incoming(topics.event, encode(good.envelope("gap", {"from_index": i, "missing": 1})), 1.0)
        for i in range(3)
    ]
    result = store.ingest(batch)
    assert (result.stored, result.invalid) == (3, 5)
    reasons = [r for (r,) in store.db.query("SELECT reason FROM quarantine ORDER BY id")]
    # The nested payload: json's RecursionError, or a depth bound in validation.check.
    assert any(w in reasons[0].lower() for w in ("nest", "deep", "depth", "recursion"))
    for name, reason in zip(
        ["MemoryError", "UnicodeDecodeError", "KeyError", "RecursionError"],
        reasons[1:],
        strict=True,
    ):
        assert name in reason, reasons
    assert store.db.query("SELECT msg_id FROM events ORDER BY msg_id") == [(1,), (2,), (3,)]
    store.close()


def test_only_database_connection_faults_are_retried(tmp_path: Path) -> None:
    from feedback.clinic.store import is_connection_fault

    assert is_connection_fault(sqlite3.OperationalError("database is locked"))
    for exc in (RecursionError(), MemoryError(), ValueError("NUL"), KeyError("x"),
                sqlite3.IntegrityError("UNIQUE"), OverflowError()):  # fmt: skip
        assert not is_connection_fault(exc), exc
    import psycopg

    assert is_connection_fault(psycopg.OperationalError("server closed the connection"))
    assert not is_connection_fault(psycopg.errors.DataError("invalid input"))


async def test_one_nested_message_does_not_stop_the_logger(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    """Defect 1 of issue 11: a 1,000-deep JSON payload made the logger retry one batch forever,
    unacknowledged, so the broker redelivered it after every restart and nothing was logged."""
    db_url = str(tmp_path / "clinic.db")
    access = BrokerAccess.from_url(clinic_broker.url)
    one, two = Topics("clinic-demo", "st-1"), Topics("clinic-demo", "st-2")
    n1, n2 = MessageNumberer("S-one"), MessageNumberer("S-two")
    async with running_logger(access, db_url) as logger:
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as pub:
            await pub.publish(one.event, NESTED, qos=1)
            for i in range(5):
                for topics, n in ((one, n1), (two, n2)):
                    body = n.envelope("gap", {"from_index": i, "missing": 1})
                    await pub.publish(topics.event, encode(body), qos=1)
        await wait_until(lambda: logger.stats.received == 11, 10, "all 11 messages")
    db = connect(db_url)
    assert db.query(
        "SELECT session_id, count(*) FROM events GROUP BY session_id ORDER BY session_id"
    ) == [("S-one", 5), ("S-two", 5)]
    reasons = db.query("SELECT topic, reason FROM quarantine")
    assert len(reasons) == 1 and reasons[0][0] == one.event
    assert any(w in reasons[0][1].lower() for w in ("nest", "deep", "depth", "recursion"))
    db.close()
    # Acknowledged: a restarted logger (same persistent session) is not handed it again.
    async with running_logger(access, db_url) as again:
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as pub:
            body = n1.envelope("gap", {"from_index": 9, "missing": 1})
            await pub.publish(one.event, encode(body), qos=1)
        await wait_until(lambda: again.stats.received >= 1, 10, "the next message")
        await asyncio.sleep(0.5)
        assert again.stats.received == 1
    db = connect(db_url)
    assert db.query("SELECT count(*) FROM quarantine") == [(1,)]
    assert db.query("SELECT count(*) FROM events") == [(11,)]


async def test_a_locked_database_is_retried_and_a_bug_is_not(
    clinic_broker: ClinicBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection fault (SQLite's "database is locked") holds the batch, unacknowledged, and
    retries it; any other exception out of the store is reported and not retried for ever."""
    db_url = str(tmp_path / "clinic.db")
    access = BrokerAccess.from_url(clinic_broker.url)
    topics, n = Topics("clinic-demo", "st-1"), MessageNumberer("S-retry")
    faults: list[BaseException] = [sqlite3.OperationalError("database is locked")] * 2
    faults.append(RuntimeError("a bug of ours"))
    real = ClinicStore.ingest

    def ingest(self: ClinicStore, batch: list[Incoming]) -> Any:
        if faults:
            raise faults.pop(0)
        return real(self, batch)

    monkeypatch.setattr(ClinicStore, "ingest", ingest)
    async with running_logger(access, db_url) as logger:
        async with aiomqtt.Client("127.0.0.1", clinic_broker.port) as pub:
            body = n.envelope("gap", {"from_index": 0, "missing": 1})
            await pub.publish(topics.event, encode(body), qos=1)
            await wait_until(lambda: logger.stats.received == 1, 10, "the first message")
            body = n.envelope("gap", {"from_index": 1, "missing": 1})
            await pub.publish(topics.event, encode(body), qos=1)
            await wait_until(lambda: logger.stats.received == 2, 10, "the second message")
        assert logger.stats.db_errors == 2 and logger.stats.ingest_failures == 1
    db = connect(db_url)
    assert db.query("SELECT msg_id FROM events") == [(2,)]  # the first went with the bug


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.sampled_from(["event", "session", "status", "cue", "rep", "live", "cmd", "x"]),
            st.binary(max_size=300)
            | st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                lambda kids: (
                    st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids)
                ),
            ).map(lambda v: json.dumps(v).encode()),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_whatever_arrives_each_message_is_accounted_for(batch: list[tuple[str, bytes]]) -> None:
    """Hostile input at the store: it never raises, and each message is stored, dropped as a
    copy or quarantined; the next good message is stored."""
    store = ClinicStore(":memory:")
    items = [Incoming(f"vmf/v1/c1/st-1/{leaf}", p, 1.0) for leaf, p in batch]
    result = store.ingest(items)
    assert result.stored + result.duplicates + result.invalid == len(items)
    good = MessageNumberer("S-after").envelope("gap", {"from_index": 0, "missing": 1})
    assert store.ingest([Incoming("vmf/v1/c1/st-1/event", encode(good), 2.0)]).stored == 1
    store.close()
