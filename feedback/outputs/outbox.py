"""The station's outbox: session messages persisted before they are published (store-and-forward).

Every lossless message is written to SQLite (WAL) first and deleted only once the clinic logger
has stored it (`confirm`, from the logger's receipt; feedback.outputs.receipts), or, where
receipts are off, after the broker's PUBACK (`ack`). So a broker crash, a dead network or a
station restart loses nothing: on start the outbox hands back whatever is still waiting, in the
order it was written, and a message stays available for a resend until its receipt.

An in-memory mirror of the pending rows keeps the publisher from reading the file again; the
file is the truth across restarts, the mirror only a cache. `MemoryOutbox` has the same interface
without the file (the peer in benchmarks, and stations that opt out of persistence).

`synchronous=NORMAL` in WAL mode: a committed message survives a crash or kill -9 of the station
process (it is in the WAL, handed to the OS); only a power cut within the OS's write-back delay
could lose the last few. `durable=True` selects `synchronous=FULL` (an fsync per message).
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from feedback.outputs.receipts import Range

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
"""
# Added for receipts: the (session, msg_id) a receipt names. An outbox file from an earlier
# version gains the columns, filled from the payloads it holds.
RECEIPT_COLUMNS = ("session", "TEXT"), ("msg_id", "INTEGER")


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    topic: str
    payload: bytes
    retain: bool
    session: str | None = None  # None: not a numbered session message, no receipt will come
    msg_id: int | None = None


class Outbox(Protocol):
    def append(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        *,
        session: str | None = None,
        msg_id: int | None = None,
    ) -> Pending: ...
    def head(self) -> Pending | None: ...
    def after(self, item_id: int) -> Pending | None: ...
    def get(self, item_id: int) -> Pending | None: ...
    def ack(self, item: Pending) -> None: ...
    def confirm(self, session: str, through: int, stored: Iterable[Range] = ()) -> int: ...
    def find(self, session: str, wanted: Iterable[Range]) -> list[Pending]: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class _Pending:
    """The pending rows in memory, in order: by id, and by (session, msg_id) for receipts."""

    def __init__(self, items: Iterable[Pending] = ()) -> None:
        self._by_id: dict[int, Pending] = {}
        self._ids: list[int] = []  # ascending; may hold removed ids until compacted
        self._by_session: dict[str, dict[int, int]] = {}  # session → msg_id → id, in order
        for item in items:
            self.add(item)

    def add(self, item: Pending) -> None:
        self._by_id[item.id] = item
        self._ids.append(item.id)
        if item.session is not None and item.msg_id is not None:
            self._by_session.setdefault(item.session, {})[item.msg_id] = item.id

    def remove(self, item_id: int) -> Pending | None:
        item = self._by_id.pop(item_id, None)
        if item is not None and item.session is not None and item.msg_id is not None:
            of_session = self._by_session.get(item.session, {})
            of_session.pop(item.msg_id, None)
            if not of_session:
                self._by_session.pop(item.session, None)
        if len(self._ids) > 64 and len(self._ids) > 2 * len(self._by_id):
            self._ids = [i for i in self._ids if i in self._by_id]
        return item

    def head(self) -> Pending | None:
        return self.after(0)

    def get(self, item_id: int) -> Pending | None:
        return self._by_id.get(item_id)

    def after(self, item_id: int) -> Pending | None:
        at = bisect.bisect_right(self._ids, item_id)
        for i in self._ids[at:]:
            if i in self._by_id:
                return self._by_id[i]
        return None

    def confirmed(self, session: str, through: int, stored: Iterable[Range]) -> list[int]:
        """Ids of the rows of `session` with msg_id ≤ through or in one of the ranges."""
        of_session = self._by_session.get(session, {})
        out = []
        for msg_id, item_id in of_session.items():  # in msg_id order: the oldest first
            if msg_id > through:
                break
            out.append(item_id)
        out += [i for _, i in self._select(of_session, stored)]
        return list(dict.fromkeys(out))  # ranges may overlap `through` and each other

    def select(self, session: str, wanted: Iterable[Range]) -> list[Pending]:
        of_session = self._by_session.get(session, {})
        return [self._by_id[i] for _, i in sorted(set(self._select(of_session, wanted)))]

    @staticmethod
    def _select(of_session: dict[int, int], wanted: Iterable[Range]) -> list[tuple[int, int]]:
        out = []
        for a, b in wanted:
            if b - a < len(of_session):  # look each up, or scan: whichever is shorter
                out += [(m, of_session[m]) for m in range(a, b + 1) if m in of_session]
            else:
                out += [(m, i) for m, i in of_session.items() if a <= m <= b]
        return out

    def __len__(self) -> int:
        return len(self._by_id)


class MemoryOutbox:
    """Ordered, lossless while the process lives; forgets everything on exit."""

    def __init__(self) -> None:
        self._pending = _Pending()
        self._next = 1

    def append(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        *,
        session: str | None = None,
        msg_id: int | None = None,
    ) -> Pending:
        item = Pending(self._next, topic, payload, retain, session, msg_id)
        self._next += 1
        self._pending.add(item)
        return item

    def head(self) -> Pending | None:
        return self._pending.head()

    def get(self, item_id: int) -> Pending | None:
        return self._pending.get(item_id)

    def after(self, item_id: int) -> Pending | None:
        return self._pending.after(item_id)

    def ack(self, item: Pending) -> None:
        self._pending.remove(item.id)

    def confirm(self, session: str, through: int, stored: Iterable[Range] = ()) -> int:
        ids = self._pending.confirmed(session, through, stored)
        for i in ids:
            self._pending.remove(i)
        return len(ids)

    def find(self, session: str, wanted: Iterable[Range]) -> list[Pending]:
        return self._pending.select(session, wanted)

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        pass


class SqliteOutbox:
    """Ordered and persistent: a row per message, deleted once it is delivered (see above)."""

    def __init__(self, path: Path | str, *, durable: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each append is its own transaction, committed before `append` returns.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        self._add_receipt_columns()
        rows = self._db.execute(
            "SELECT id, topic, payload, retain, session, msg_id FROM outbox ORDER BY id"
        )
        self._pending = _Pending(
            Pending(int(i), str(t), _blob(p), bool(r), s, m) for i, t, p, r, s, m in rows
        )
        self.recovered = len(self._pending)  # messages left over from an earlier run

    def _add_receipt_columns(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if all(name in have for name, _ in RECEIPT_COLUMNS):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for name, kind in RECEIPT_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {kind}")
            rows = self._db.execute("SELECT id, payload FROM outbox").fetchall()
            for item_id, payload in rows:
                session, msg_id = session_and_msg_id(_blob(payload))
                self._db.execute(
                    "UPDATE outbox SET session = ?, msg_id = ? WHERE id = ?",
                    (session, msg_id, item_id),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def append(
        self,
        topic: str,
        payload: bytes,
        retain: bool,
        *,
        session: str | None = None,
        msg_id: int | None = None,
    ) -> Pending:
        cur = self._db.execute(
            "INSERT INTO outbox (topic, payload, retain, session, msg_id) VALUES (?, ?, ?, ?, ?)",
            (topic, payload, int(retain), session, msg_id),
        )
        assert cur.lastrowid is not None
        item = Pending(cur.lastrowid, topic, payload, retain, session, msg_id)
        self._pending.add(item)
        return item

    def head(self) -> Pending | None:
        return self._pending.head()

    def get(self, item_id: int) -> Pending | None:
        return self._pending.get(item_id)

    def after(self, item_id: int) -> Pending | None:
        return self._pending.after(item_id)

    def ack(self, item: Pending) -> None:
        self._db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
        self._pending.remove(item.id)

    def confirm(self, session: str, through: int, stored: Iterable[Range] = ()) -> int:
        ids = self._pending.confirmed(session, through, stored)
        if ids:
            with self._db:  # one transaction, not one per row
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            for i in ids:
                self._pending.remove(i)
        return len(ids)

    def find(self, session: str, wanted: Iterable[Range]) -> list[Pending]:
        return self._pending.select(session, wanted)

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self._db.close()


def session_and_msg_id(payload: bytes) -> tuple[str | None, int | None]:
    """The (session, msg_id) of an encoded session message; (None, None) if it has none."""
    try:
        body = json.loads(payload)
    except Exception:
        return None, None
    if not isinstance(body, dict):
        return None, None
    session, msg_id = body.get("session"), body.get("msg_id")
    if isinstance(session, str) and type(msg_id) is int and msg_id > 0:
        return session, msg_id
    return None, None


def _blob(value: bytes | str) -> bytes:
    # Written as BLOB; a hand-edited file may hold TEXT, which sqlite3 returns as str.
    return value.encode() if isinstance(value, str) else bytes(value)
