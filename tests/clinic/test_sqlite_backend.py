"""Two loggers started together on one SQLite file: the second opens it while the first holds
the write lock creating the schema. SQLite then refuses the switch to WAL at once (it will not
wait where waiting could deadlock), so the second logger must wait for it, not crash with
"database is locked" (seen in CI: `make loadtest`'s second logger died at start)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from feedback.clinic.db import SqliteBackend


def writer_holding_the_lock(path: Path, hold_s: float) -> threading.Thread:
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE t (x INTEGER)")
    first.execute("BEGIN IMMEDIATE")  # as the store's transactions do
    first.execute("INSERT INTO t VALUES (1)")

    def release() -> None:
        time.sleep(hold_s)
        first.execute("COMMIT")
        first.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_second_logger_waits_for_the_first_to_create_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "clinic.db"
    thread = writer_holding_the_lock(path, 0.5)
    t0 = time.monotonic()
    backend = SqliteBackend(str(path))
    waited = time.monotonic() - t0
    thread.join()
    assert backend.query("PRAGMA journal_mode")[0][0] == "wal"
    assert backend.query("SELECT count(*) FROM t")[0][0] == 1
    assert 0.3 < waited < 5.0


def test_the_busy_timeout_alone_does_not_wait_there(tmp_path: Path) -> None:
    """The negative control: a plain connection with a long busy timeout fails at once."""
    path = tmp_path / "clinic.db"
    thread = writer_holding_the_lock(path, 0.5)
    try:
        plain = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            plain.execute("PRAGMA journal_mode=WAL")
        assert time.monotonic() - t0 < 0.3
        plain.close()
    finally:
        thread.join()
