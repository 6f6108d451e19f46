"""The station's session log in SQLite: session, settings snapshot, reps and events.

Writes go through a bounded in-memory queue to one writer task; sqlite3 calls run in a worker
thread so that a slow disk can never delay the processing loop. The queue holds MAX_QUEUED_ROWS
(minutes of a stalled disk); past that a row is refused with `OutputFull`, counted in `refused`
and logged by the runner: never a silent drop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from feedback.outputs.base import OutputFull

MAX_QUEUED_ROWS = 100_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    clinic TEXT NOT NULL,
    station TEXT NOT NULL,
    patient TEXT NOT NULL,
    protocol TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    settings_json TEXT NOT NULL,
    device_json TEXT NOT NULL,
    summary_json TEXT
);
CREATE TABLE IF NOT EXISTS reps (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    rep INTEGER NOT NULL,
    at_index INTEGER NOT NULL,
    t REAL NOT NULL,
    time_to_band_s REAL,
    PRIMARY KEY (session_id, rep)
);
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    seq INTEGER NOT NULL,
    t REAL NOT NULL,
    kind TEXT NOT NULL,
    detail_json TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX IF NOT EXISTS sessions_by_patient ON sessions(patient, started_at);
"""


class SessionStore:
    def __init__(self, path: Path, capacity: int = MAX_QUEUED_ROWS) -> None:
        self.path = path
        self.capacity = capacity
        self.refused = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._queue: asyncio.Queue[tuple[str, tuple[Any, ...]]] = asyncio.Queue(maxsize=capacity)
        self._event_seq = 0
        # The writer thread and close() must never use the connection at the same time: a
        # session that fails mid-write still closes the store, and sqlite3 is not safe for that.
        self._lock = threading.Lock()
        self.rows_written = 0

    def start_session(
        self,
        session_id: str,
        *,
        clinic: str,
        station: str,
        patient: str,
        protocol: str,
        started_at: float,
        settings: dict[str, Any],
        device: dict[str, Any],
    ) -> None:
        self._put(
            "INSERT INTO sessions (id, clinic, station, patient, protocol, started_at,"
            " settings_json, device_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                clinic,
                station,
                patient,
                protocol,
                started_at,
                json.dumps(settings),
                json.dumps(device),
            ),
        )

    def add_rep(
        self, session_id: str, rep: int, at_index: int, t: float, time_to_band_s: float | None
    ) -> None:
        self._put(
            "INSERT INTO reps VALUES (?, ?, ?, ?, ?)",
            (session_id, rep, at_index, t, time_to_band_s),
        )

    def add_event(self, session_id: str, t: float, kind: str, detail: dict[str, Any]) -> None:
        self._event_seq += 1
        self._put(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            (session_id, self._event_seq, t, kind, json.dumps(detail)),
        )

    def end_session(self, session_id: str, ended_at: float, summary: dict[str, Any]) -> None:
        self._put(
            "UPDATE sessions SET ended_at = ?, summary_json = ? WHERE id = ?",
            (ended_at, json.dumps(summary), session_id),
        )

    def _put(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._queue.put_nowait((sql, params))
        except asyncio.QueueFull:
            self.refused += 1
            raise OutputFull("session_log", self.capacity) from None

    async def run(self) -> None:
        """Write queued rows in batches, one transaction per batch; runs until cancelled."""
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await asyncio.to_thread(self._write, batch)
            for _ in batch:
                self._queue.task_done()

    def _write(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            self._write_locked(batch)

    def _write_locked(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for sql, params in batch:
                self._db.execute(sql, params)
        self.rows_written += len(batch)

    async def flush(self) -> None:
        await self._queue.join()

    def close(self) -> None:
        # Anything still queued (the writer task was cancelled early) is written now, in order.
        pending = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        with self._lock:
            if pending:
                self._write_locked(pending)
            self._db.close()
