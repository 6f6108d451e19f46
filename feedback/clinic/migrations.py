"""Schema migrations of the clinic database, applied in order, each once, in a transaction.

A migration is never edited after release: a change to the schema is a new entry at the end.
Each applied migration's checksum (SHA-256 of its SQL and of the source of its Python step) is
kept in `schema_migrations`; a database whose applied migration differs from the code's is
refused (`MigrationChanged`), as is one newer than the code (`SchemaNewerThanCode`).
`{serial}`, `{int}`, `{real}` and `{blob}` are the backend's type names (see `db.py`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from feedback.clinic import live_seconds, partitions
from feedback.clinic.db import Backend


class MigrationError(RuntimeError):
    """The database's schema cannot be brought up to date by this code."""


class MigrationChanged(MigrationError):
    """A migration already applied to the database differs from the code's."""


class SchemaNewerThanCode(MigrationError):
    """The database has migrations this code does not know (a newer logger made it)."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str = ""  # portable; split on ';' (no procedural blocks)
    step: Callable[[Backend], None] | None = None  # what SQL cannot say (folding, partitions)

    def checksum(self) -> str:
        text = self.sql + (inspect.getsource(self.step) if self.step else "")
        return hashlib.sha256(text.encode()).hexdigest()

    def apply(self, db: Backend) -> None:
        for statement in self.sql.format(**db.types).split(";"):
            if statement.strip():
                db.execute(statement)
        if self.step is not None:
            self.step(db)


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "sessions, messages, reps, cues, events, live metrics, commands, quarantine",
        """
CREATE TABLE stations (
    clinic TEXT NOT NULL, station TEXT NOT NULL, state TEXT NOT NULL, session_id TEXT,
    t {real} NOT NULL, PRIMARY KEY (clinic, station));
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, clinic TEXT NOT NULL, station TEXT NOT NULL,
    patient TEXT, side TEXT, protocol TEXT, reps_prescribed {int},
    started_at {real}, ended_at {real}, pain_before {int}, pain_after {int},
    settings_json TEXT, device_json TEXT, summary_json TEXT);
CREATE TABLE messages (
    seq {serial}, session_id TEXT NOT NULL, msg_id {int} NOT NULL, type TEXT NOT NULL,
    clinic TEXT NOT NULL, station TEXT NOT NULL, t {real} NOT NULL, received_at {real} NOT NULL,
    sha256 TEXT NOT NULL, UNIQUE (session_id, msg_id));
CREATE TABLE reps (
    session_id TEXT NOT NULL, period {int} NOT NULL, msg_id {int} NOT NULL, t {real} NOT NULL,
    achieved {int} NOT NULL, rep {int}, at_index {int}, time_to_band_s {real},
    peak_pct_mvc {real}, mean_pct_mvc {real}, hold_s {real}, time_in_band_s {real},
    vm_vl_ratio {real}, onset_diff_ms {real}, symmetry_pct {real},
    PRIMARY KEY (session_id, period));
CREATE TABLE cues (
    session_id TEXT NOT NULL, msg_id {int} NOT NULL, t {real} NOT NULL, kind TEXT NOT NULL,
    value TEXT NOT NULL, sample_index {int}, t_sample {real}, PRIMARY KEY (session_id, msg_id));
CREATE TABLE events (
    session_id TEXT NOT NULL, msg_id {int} NOT NULL, t {real} NOT NULL, type TEXT NOT NULL,
    detail_json TEXT NOT NULL, PRIMARY KEY (session_id, msg_id));
CREATE TABLE live (
    session_id TEXT NOT NULL, msg_id {int} NOT NULL, t {real} NOT NULL, phase TEXT,
    reps {int}, vm_vl_ratio {real}, sample_index {int}, pct_mvc_json TEXT NOT NULL,
    PRIMARY KEY (session_id, msg_id));
CREATE TABLE commands (
    id {serial}, clinic TEXT NOT NULL, station TEXT NOT NULL, issuer TEXT NOT NULL,
    msg_id {int} NOT NULL, action TEXT NOT NULL, session_id TEXT, t {real} NOT NULL,
    received_at {real} NOT NULL, body_json TEXT NOT NULL, UNIQUE (clinic, station, issuer, msg_id));
CREATE TABLE quarantine (
    id {serial}, received_at {real} NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    size {int} NOT NULL, sha256 TEXT NOT NULL, payload {blob} NOT NULL);
""",
    ),
    Migration(
        2,
        "indexes for per-patient and per-session queries",
        """
CREATE INDEX sessions_by_patient ON sessions (patient, started_at);
CREATE INDEX sessions_by_station ON sessions (clinic, station, started_at);
CREATE INDEX events_by_session_type ON events (session_id, type);
CREATE INDEX live_by_session_time ON live (session_id, t);
CREATE INDEX quarantine_by_time ON quarantine (received_at);
""",
    ),
    Migration(
        3,
        "session owners (a session belongs to the station that started it), delivery watermark,"
        " station clinics (a station id belongs to one clinic)",
        # stored_through: every msg_id from 1 to it is stored (what receipts confirm, and where
        # the gap detector starts looking). Sessions already stored are bound to the station
        # of their first message, and their watermark computed from the ledger.
        """
CREATE TABLE session_owners (
    session_id TEXT PRIMARY KEY, clinic TEXT NOT NULL, station TEXT NOT NULL,
    bound_at {real} NOT NULL, stored_through {int} NOT NULL DEFAULT 0,
    duplicates {int} NOT NULL DEFAULT 0);
INSERT INTO session_owners (session_id, clinic, station, bound_at)
    SELECT m.session_id, m.clinic, m.station, m.received_at FROM messages m
    WHERE m.seq = (SELECT min(seq) FROM messages f WHERE f.session_id = m.session_id);
INSERT INTO session_owners (session_id, clinic, station, bound_at)
    SELECT s.session_id, s.clinic, s.station, coalesce(s.started_at, 0) FROM sessions s
    WHERE NOT EXISTS (SELECT 1 FROM session_owners o WHERE o.session_id = s.session_id);
UPDATE session_owners SET stored_through = (
    SELECT min(m.msg_id) FROM messages m WHERE m.session_id = session_owners.session_id
    AND NOT EXISTS (SELECT 1 FROM messages n
                    WHERE n.session_id = m.session_id AND n.msg_id = m.msg_id + 1))
    WHERE EXISTS (SELECT 1 FROM messages m
                  WHERE m.session_id = session_owners.session_id AND m.msg_id = 1);
CREATE TABLE station_clinics (
    station TEXT PRIMARY KEY, clinic TEXT NOT NULL, bound_at {real} NOT NULL);
INSERT INTO station_clinics (station, clinic, bound_at)
    SELECT m.station, m.clinic, m.received_at FROM messages m
    WHERE m.seq = (SELECT min(seq) FROM messages f WHERE f.station = m.station);
""",
    ),
]


def _v4_live_seconds(db: Backend) -> None:
    """`live` (one row per 10 Hz message) folded into `live_seconds` (one per second), and
    dropped. PostgreSQL: live_seconds and events partitioned by day, with a partition for
    each day that already has data, and a DEFAULT one for clocks far off."""
    pg = db.dialect == "postgresql"
    db.execute((
        "CREATE TABLE live_seconds ("
        " session_id TEXT NOT NULL, second {int} NOT NULL, count {int} NOT NULL,"
        " msg_id_min {int} NOT NULL, msg_id_max {int} NOT NULL, msg_ids {blob} NOT NULL,"
        " t_first {real} NOT NULL, t_last {real} NOT NULL, index_min {int}, index_max {int},"
        " phase TEXT, reps {int}, ratio_n {int} NOT NULL, ratio_min {real}, ratio_mean {real},"
        " ratio_max {real}, pct_json TEXT NOT NULL, PRIMARY KEY (session_id, second))"
        + (" PARTITION BY RANGE (second)" if pg else "")
    ).format(**db.types))  # fmt: skip
    # The copy check looks up the rows whose msg_id range reaches a message's msg_id.
    db.execute("CREATE INDEX live_seconds_by_msg_id ON live_seconds (session_id, msg_id_max)")
    if pg:
        db.execute("CREATE TABLE live_seconds_default PARTITION OF live_seconds DEFAULT")
        db.execute("ALTER TABLE events RENAME TO events_v3")
        db.execute("ALTER TABLE events_v3 RENAME CONSTRAINT events_pkey TO events_v3_pkey")
        db.execute("DROP INDEX events_by_session_type")
        # A partitioned table's key holds its partition key; msg_ids stay unique per session
        # through the message ledger (`messages`), which every event claims first.
        db.execute(
            "CREATE TABLE events (session_id TEXT NOT NULL, msg_id BIGINT NOT NULL,"
            " t DOUBLE PRECISION NOT NULL, type TEXT NOT NULL, detail_json TEXT NOT NULL,"
            " PRIMARY KEY (session_id, msg_id, t)) PARTITION BY RANGE (t)"
        )
        db.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
        for table, source in (("events", "events_v3"), ("live_seconds", "live")):
            existing = partitions.partitions(db, table)
            for (day,) in db.query(f"SELECT DISTINCT floor(t / 86400) FROM {source}"):
                partitions.ensure_day(db, table, int(day), existing=existing)
        db.execute("INSERT INTO events SELECT * FROM events_v3")
        db.execute("DROP TABLE events_v3")
        db.execute("CREATE INDEX events_by_session_type ON events (session_id, type, t)")
    else:  # retention deletes by age
        db.execute("CREATE INDEX live_seconds_by_second ON live_seconds (second)")
        db.execute("CREATE INDEX events_by_time ON events (t)")
    for (session,) in db.query("SELECT DISTINCT session_id FROM live"):
        rows: dict[int, live_seconds.Second] = {}
        for msg_id, t, phase, reps, ratio, index, pct in db.query(
            "SELECT msg_id, t, phase, reps, vm_vl_ratio, sample_index, pct_mvc_json FROM live"
            " WHERE session_id = ? ORDER BY msg_id",
            (session,),
        ):
            s = live_seconds.second_of(t)
            rows.setdefault(s, live_seconds.Second(session, s)).add({
                "msg_id": msg_id, "t": t, "phase": phase, "reps": reps, "vm_vl_ratio": ratio,
                "index": index, "pct_mvc": json.loads(pct),
            })  # fmt: skip
        for row in rows.values():
            db.execute(live_seconds.UPSERT, row.row())
    db.execute("DROP TABLE live")


MIGRATIONS.append(Migration(
    4, "live kept at 1 Hz (live_seconds); PostgreSQL: live_seconds and events in daily partitions",
    step=_v4_live_seconds,
))  # fmt: skip


def _v5_ledger_key(db: Backend) -> None:
    """The ledger's primary key is its (session_id, msg_id), no longer `seq`. Every claim
    inserted into both indexes (PostgreSQL), and nothing looks a row up by `seq`: it keeps
    the arrival order (its sequence's default), without an index. SQLite's `seq` is the rowid
    and costs nothing: unchanged."""
    if db.dialect == "postgresql":
        db.execute(
            "ALTER TABLE messages DROP CONSTRAINT messages_pkey,"
            " DROP CONSTRAINT messages_session_id_msg_id_key,"
            " ADD CONSTRAINT messages_pkey PRIMARY KEY (session_id, msg_id)"
        )


MIGRATIONS.append(
    Migration(5, "the message ledger keyed by (session_id, msg_id)", step=_v5_ledger_key)
)

LATEST = MIGRATIONS[-1].version


def migrate(db: Backend, *, upto: int | None = None) -> list[int]:
    """Bring the schema up to date (or to version `upto`, for tests of an upgrade); returns
    the versions applied now. Checks first that what was applied is what this code says."""
    applied: list[int] = []
    with db.transaction():
        db.lock_for_migration()
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            f" version {db.types['int']} PRIMARY KEY, description TEXT NOT NULL,"
            f" applied_at {db.types['real']} NOT NULL, checksum TEXT)"
        )
        _add_checksum_column(db)
        known = {m.version: m for m in MIGRATIONS}
        done = {int(v): c for v, c in db.query("SELECT version, checksum FROM schema_migrations")}
        if unknown := sorted(set(done) - set(known)):
            raise SchemaNewerThanCode(
                f"the database has schema migrations {unknown} that this code does not know "
                f"(it knows 1 to {LATEST}): a newer version of the logger made it"
            )
        for version, stored in sorted(done.items()):
            m = known[version]
            if stored is None:  # applied before checksums were kept: recorded as this code's
                db.execute(
                    "UPDATE schema_migrations SET checksum = ? WHERE version = ?",
                    (m.checksum(), version),
                )
            elif stored != m.checksum():
                raise MigrationChanged(
                    f"schema migration {version} ({m.description}) as applied to this database"
                    f" (checksum {stored[:12]}…) differs from this code's ({m.checksum()[:12]}…)"
                )
        for m in MIGRATIONS:
            if m.version in done or (upto is not None and m.version > upto):
                continue
            m.apply(db)
            db.execute(
                "INSERT INTO schema_migrations (version, description, applied_at, checksum)"
                " VALUES (?, ?, ?, ?)",
                (m.version, m.description, time.time(), m.checksum()),
            )
            applied.append(m.version)
    return applied


def _add_checksum_column(db: Backend) -> None:
    """schema_migrations before checksums (up to version 3) had none."""
    if db.dialect == "postgresql":
        db.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT")
    elif "checksum" not in {r[1] for r in db.query("PRAGMA table_info(schema_migrations)")}:
        db.execute("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")


def current_version(db: Backend) -> int:
    rows = db.query("SELECT max(version) FROM schema_migrations")
    return int(rows[0][0] or 0)
