"""The station's outbox: session messages persisted before they are published (store-and-forward).

Every lossless message is written to SQLite (WAL) first and deleted only after the broker's PUBACK,
so a broker outage, a dead network or a station restart loses nothing: on start the outbox hands
back whatever is still waiting, in the order it was written.

An in-memory mirror of the pending rows keeps the publisher from reading the file again; the
file is the truth across restarts, the mirror only a cache. `MemoryOutbox` has the same interface
without the file (the peer in benchmarks, and stations that opt out of persistence).

`synchronous=NORMAL` in WAL mode: a committed message survives a crash or kill -9 of the station
process (it is in the WAL, handed to the OS); only a power cut within the OS's write-back delay
could lose the last few. `durable=True` selects `synchronous=FULL` (an fsync per message).
"""

from __future__ import annotations

import collections
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    topic: str
    payload: bytes
    retain: bool


class Outbox(Protocol):
    def append(self, topic: str, payload: bytes, retain: bool) -> Pending: ...
    def head(self) -> Pending | None: ...
    def ack(self, item: Pending) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class MemoryOutbox:
    """Ordered, lossless while the process lives; forgets everything on exit."""

    def __init__(self) -> None:
        self._items: collections.deque[Pending] = collections.deque()
        self._next = 1

    def append(self, topic: str, payload: bytes, retain: bool) -> Pending:
        item = Pending(self._next, topic, payload, retain)
        self._next += 1
        self._items.append(item)
        return item

    def head(self) -> Pending | None:
        return self._items[0] if self._items else None

    def ack(self, item: Pending) -> None:
        if self._items and self._items[0].id == item.id:
            self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        pass


class SqliteOutbox:
    """Ordered and persistent: a row per message, deleted once the broker has acknowledged it."""

    def __init__(self, path: Path | str, *, durable: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each append is its own transaction, committed before `append` returns.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        rows = self._db.execute("SELECT id, topic, payload, retain FROM outbox ORDER BY id")
        self._mirror: collections.deque[Pending] = collections.deque(
            Pending(int(i), str(t), bytes(p), bool(r)) for i, t, p, r in rows
        )
        self.recovered = len(self._mirror)  # messages left over from an earlier run

    def append(self, topic: str, payload: bytes, retain: bool) -> Pending:
        cur = self._db.execute(
            "INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, ?)",
            (topic, payload, int(retain)),
        )
        assert cur.lastrowid is not None
        item = Pending(cur.lastrowid, topic, payload, retain)
        self._mirror.append(item)
        return item

    def head(self) -> Pending | None:
        return self._mirror[0] if self._mirror else None

    def ack(self, item: Pending) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
        if self._mirror and self._mirror[0].id == item.id:
            self._mirror.popleft()

    def __len__(self) -> int:
        return len(self._mirror)

    def close(self) -> None:
        self._db.close()
