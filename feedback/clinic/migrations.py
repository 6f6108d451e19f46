"""Schema migrations of the clinic database, applied in order, each once, in a transaction.

A migration is never edited after release: a change to the schema is a new entry at the end.
`{serial}`, `{int}`, `{real}` and `{blob}` are the backend's type names (see `db.py`).
"""

from __future__ import annotations

import time

from feedback.clinic.db import Backend

MIGRATIONS: list[tuple[int, str, str]] = [
    (
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
    (
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
    (
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

LATEST = MIGRATIONS[-1][0]


def migrate(db: Backend, *, upto: int | None = None) -> list[int]:
    """Bring the schema up to date (or to version `upto`, for tests of an upgrade); returns
    the versions applied now."""
    applied: list[int] = []
    with db.transaction():
        db.lock_for_migration()
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            f" version {db.types['int']} PRIMARY KEY, description TEXT NOT NULL,"
            f" applied_at {db.types['real']} NOT NULL)"
        )
        done = {int(v) for (v,) in db.query("SELECT version FROM schema_migrations")}
        for version, description, ddl in MIGRATIONS:
            if version in done or (upto is not None and version > upto):
                continue
            for statement in ddl.format(**db.types).split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (version, description, time.time()),
            )
            applied.append(version)
    return applied


def current_version(db: Backend) -> int:
    rows = db.query("SELECT max(version) FROM schema_migrations")
    return int(rows[0][0] or 0)
