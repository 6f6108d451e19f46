"""Sessions belong to the station that started them (issue 11, defect 5).

Publishing only on topics its own ACL allows, station st-b sent messages carrying st-a's session
id: the patient id became P-6666, the summary was replaced, and st-a's genuine message 4 was
quarantined as a forgery. The logger now binds a session id to the (clinic, station) that first
sent it (its status and session_start, msg_id 1 and 2) and quarantines anything else claiming it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from feedback.clinic.db import connect
from feedback.clinic.migrations import LATEST, current_version, migrate
from feedback.clinic.store import ClinicStore, Incoming
from feedback.outputs.topics import MessageNumberer, Topics, encode
from tests.clinic.conftest import running_logger, wait_until
from tests.clinic.test_security import SecureBroker, client, secure_broker  # noqa: F401

SID = "S20261130-120000-aaaaaa"


def start_body(patient: str) -> dict[str, Any]:
    return {
        "patient": patient,
        "side": "right",
        "protocol": "quad-sets",
        "reps_prescribed": 3,
        "device": {"spec": "sim", "kind": "simulator", "rate_hz": 2000, "channels": ["VM"]},
        "settings": {"session": {"patient": patient}, "target": {}, "protocol": {}},
    }


def end_body(reps: int) -> dict[str, Any]:
    return {"summary": {"reps": reps, "duration_s": 10.0, "stopped_by": "protocol_done"}}


def stamped(kind: str, msg_id: int, body: dict[str, Any]) -> bytes:
    n = MessageNumberer(SID)
    n._next = msg_id
    return encode(n.envelope(kind, body))


def genuine(a: Topics) -> list[tuple[str, bytes]]:
    return [
        (a.status, stamped("status", 1, {"state": "in_session"})),
        (a.session, stamped("session_start", 2, start_body("P-0001"))),
        *[(a.event, stamped("gap", i, {"from_index": i, "missing": 1})) for i in (3, 4, 5)],
        (a.session, stamped("session_end", 6, end_body(3))),
    ]


def forged(b: Topics) -> list[tuple[str, bytes]]:
    return [
        (b.session, stamped("session_start", 2, start_body("P-6666"))),
        (b.event, stamped("gap", 4, {"from_index": 666, "missing": 6})),
        (b.session, stamped("session_end", 7, end_body(99))),
    ]


async def test_a_station_cannot_rewrite_another_stations_session(
    secure_broker: SecureBroker,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    db_url = str(tmp_path / "clinic.db")
    a, b = Topics("clinic-demo", "st-a"), Topics("clinic-demo", "st-b")
    mine, theirs = genuine(a), forged(b)
    # st-a's first three, then st-b's forgeries (its message 4 before st-a's), then the rest.
    order = [*(("st-a", m) for m in mine[:3]), *(("st-b", m) for m in theirs)]
    order += [("st-a", m) for m in mine[3:]]
    async with running_logger(secure_broker.access("logger"), db_url) as logger:
        async with (
            client(secure_broker, "clinic-demo/st-a") as st_a,
            client(secure_broker, "clinic-demo/st-b") as st_b,
        ):
            for who, (topic, payload) in order:
                await (st_a if who == "st-a" else st_b).publish(topic, payload, qos=1)
                await asyncio.sleep(0.05)  # one at a time, in this order
        await wait_until(lambda: logger.stats.received == len(order), 10, "every message")
    db = connect(db_url)
    assert db.query("SELECT patient, station, summary_json FROM sessions") == [
        ("P-0001", "st-a", json.dumps(end_body(3)["summary"]))
    ]
    assert db.query("SELECT msg_id, station FROM messages ORDER BY msg_id") == [
        (i, "st-a") for i in range(1, 7)
    ]
    details = [json.loads(d)["from_index"] for (d,) in db.query(
        "SELECT detail_json FROM events ORDER BY msg_id")]  # fmt: skip
    assert details == [3, 4, 5]
    quarantined = db.query("SELECT topic, reason FROM quarantine ORDER BY id")
    assert [t for t, _ in quarantined] == [t for t, _ in theirs]  # none of st-a's
    assert all("session owned by another station" in r for _, r in quarantined), quarantined


def test_first_station_binds_the_session_in_the_store(tmp_path: Path) -> None:
    """The same rule without a broker, for every kind that carries a session id."""
    store = ClinicStore(str(tmp_path / "clinic.db"))
    a, b = Topics("c1", "st-a"), Topics("c1", "st-b")
    other_clinic = Topics("c2", "st-a")  # the same station id in another clinic: not the same
    batch = [Incoming(t, p, 1.0) for t, p in genuine(a)[:2]]
    batch += [Incoming(t, p, 1.0) for t, p in forged(b)]
    batch.append(
        Incoming(other_clinic.event, stamped("gap", 9, {"from_index": 0, "missing": 1}), 1.0)
    )
    live = {"pct_mvc": {"VM": 1.0}, "phase": "work", "reps": 0, "index": 5, "t_sample": 1.8e9}
    batch.append(Incoming(b.live, stamped("live", 1, live), 1.0))
    result = store.ingest(batch)
    assert result.stored == 2 and result.invalid == 5
    assert store.db.query("SELECT count(*) FROM live_seconds") == [(0,)]
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_binds_sessions_already_stored(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Schema 2 → 3 in place, with data: each stored session is bound to the station of its
    first message, so a forgery after the upgrade is refused too."""
    path = (
        str(tmp_path / "old.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    )
    db = connect(path)
    assert migrate(db, upto=2) == [1, 2]
    db.execute(
        "INSERT INTO messages (session_id, msg_id, type, clinic, station, t, received_at, sha256)"
        " VALUES (?, 1, 'status', 'c1', 'st-a', 1.8e9, 1.8e9, 'x'),"
        " (?, 2, 'session_start', 'c1', 'st-a', 1.8e9, 1.8e9, 'y')",
        (SID, SID),
    )
    db.close()
    store = ClinicStore(path)  # migrates on open
    assert current_version(store.db) == LATEST
    assert store.db.query(
        "SELECT session_id, clinic, station, stored_through FROM session_owners"
    ) == [(SID, "c1", "st-a", 2)]
    assert store.db.query("SELECT station, clinic FROM station_clinics") == [("st-a", "c1")]
    b = Topics("c1", "st-b")
    result = store.ingest(
        [Incoming(b.event, stamped("gap", 3, {"from_index": 0, "missing": 1}), 2.0)]
    )
    assert result.invalid == 1 and "owned by another station" in result.reasons[0]
    store.close()


def test_a_station_id_belongs_to_one_clinic(tmp_path: Path) -> None:
    """The same station id in another clinic's tree (the ACL's `vmf/v1/+/%u/...` lets a station
    account write there) is refused: a station's records never mix two clinics."""
    store = ClinicStore(str(tmp_path / "clinic.db"))
    home, away = Topics("c1", "st-a"), Topics("c2", "st-a")
    other = MessageNumberer("S-other")
    own = [Incoming(t, p, 1.0) for t, p in genuine(home)[:3]]
    foreign = [
        Incoming(away.event, encode(other.envelope("gap", {"from_index": 0, "missing": 1})), 1.0),
        Incoming(away.status, encode({"v": 1, "type": "status", "session": None, "msg_id": 0,
                                      "t": 1.8e9, "state": "offline"}), 1.0),
    ]  # fmt: skip
    result = store.ingest(own + foreign)
    assert (result.stored, result.invalid) == (3, 2)
    assert all(r == "station st-a belongs to clinic c1" for r in result.reasons), result.reasons
    assert store.db.query("SELECT clinic, station FROM stations") == [("c1", "st-a")]
    store.close()
    again = ClinicStore(str(tmp_path / "clinic.db"))  # the binding is in the database
    assert again.ingest(foreign[:1]).invalid == 1
    again.close()


def last_will(topics: Topics) -> Incoming:
    body = {"v": 1, "type": "status", "session": None, "msg_id": 0, "t": 1.8e9, "state": "offline"}
    return Incoming(topics.status, encode(body), 1.0)


def gap(topics: Topics, session: str, msg_id: int) -> Incoming:
    n = MessageNumberer(session)
    n._next = msg_id
    return Incoming(topics.event, encode(n.envelope("gap", {"from_index": 0, "missing": 1})), 1.0)


def hold_after_first(store: ClinicStore, table: str, mine: Any, theirs: Any) -> None:
    """After the store's first insert into `table`, wait (while its row locks are held) until
    the other store has made its own, or 1.5 s: the interleaving a shared subscription makes
    now and then, made every time."""
    db = store.db
    real_execute, real_query = db.execute, db.query

    def after(sql: str) -> None:
        if f"INSERT INTO {table}" in sql and not mine.is_set():
            mine.set()
            theirs.wait(1.5)

    def execute(sql: str, params: Any = ()) -> int:
        n = real_execute(sql, params)
        after(sql)
        return n

    def query(sql: str, params: Any = ()) -> list[Any]:
        rows = real_query(sql, params)
        after(sql)
        return rows

    db.execute, db.query = execute, query  # type: ignore[method-assign]


@pytest.mark.parametrize("table", ["session_owners", "station_clinics"])
def test_two_loggers_binding_new_sessions_at_once_do_not_deadlock(
    postgres_url: str, table: str
) -> None:
    """Issue 13: with two loggers (`make loadtest ARGS="--store postgres --loggers 2"`), each
    run saw one PostgreSQL deadlock on the first owner insert. A shared subscription hands the
    first messages of new sessions to both loggers; each bound them in the order they came, so
    one held S1's new owner row and wanted S2's while the other held S2's and wanted S1's.
    Both batches must be stored, and each session bound to its own station."""
    import threading

    s1, s2 = Topics("c1", "st-1"), Topics("c1", "st-2")
    stores = [ClinicStore(postgres_url), ClinicStore(postgres_url)]
    if table == "session_owners":  # the stations already known: only the sessions are new
        stores[0].ingest([last_will(s1), last_will(s2)])
    batches = [
        [gap(s1, "S-one", 1), gap(s2, "S-two", 1)],
        [gap(s2, "S-two", 2), gap(s1, "S-one", 2)],
    ]
    done = [threading.Event(), threading.Event()]
    for k, store in enumerate(stores):
        hold_after_first(store, table, done[k], done[1 - k])
    errors: list[BaseException] = []
    stored: list[int] = []

    def work(store: ClinicStore, batch: list[Incoming]) -> None:
        try:
            stored.append(store.ingest(batch).stored)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(s, b)) for s, b in zip(stores, batches, strict=True)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert stored == [2, 2]
    db = stores[0].db
    owners = db.query("SELECT session_id, station FROM session_owners ORDER BY 1")
    assert owners == [("S-one", "st-1"), ("S-two", "st-2")]
    assert db.query("SELECT count(*) FROM messages") == [(4,)]
    for s in stores:
        s.close()
