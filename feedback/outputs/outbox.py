"""The station's outbox: session messages persisted before they are published (store-and-forward).

Every lossless message is written to SQLite (WAL) first and deleted only once the clinic logger
has stored it (`confirm`, from the logger's receipt; feedback.outputs.receipts), or, where
receipts are off, after the broker's PUBACK (`ack`). So a broker crash, a dead network or a
station restart loses nothing: on start the outbox hands back whatever is still waiting, in the
order it was written, and a message stays available for a resend until its receipt.

An in-memory mirror of the pending rows keeps the publisher from reading the file again; the
file is the truth across restarts, the mirror only a cache. `MemoryOutbox` has the same interface
without the file (the peer in benchmarks, and stations that opt out of persistence).

The file is written by a thread of its own (`_Writer`): an INSERT and a commit (an fsync with
`durable=True`) cost 50 µs to milliseconds, and the event loop that publishes cues must not wait
for them. `append` puts the row in the mirror and returns; the row goes on the writer's queue at
the event loop's next turn (at once outside an event loop), and the writer commits whatever has
queued up in one transaction. Not at once: waking the thread there hands it the GIL while
`publish`, right after, writes the socket, and the cue then waits for the writer (0.2 ms at the
median, milliseconds on a loaded machine; bench_latency). Ids are given here, not by SQLite, so the
mirror and the publisher know a message's id at once. A delete (after a PUBACK or a receipt)
queues behind the insert of the same row, so the file never loses a row it has not yet held.
What this changes: a broker crash or a lost network loses nothing (the mirror holds every
message until it is delivered, and the writer catches up meanwhile); a kill -9 of the station
loses at most the messages appended in the last moments before it (usually about a
millisecond: the rest of the event loop's turn, then the queue, whose depth is `queued`) that
were not yet published. `sync` waits until
the file has everything appended so far; `close` syncs first.

`synchronous=NORMAL` in WAL mode: a committed message survives a crash or kill -9 of the station
process (it is in the WAL, handed to the OS); only a power cut within the OS's write-back delay
could lose the last few. `durable=True` selects `synchronous=FULL` (an fsync per commit).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from feedback.outputs.receipts import Range

log = logging.getLogger(__name__)

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
    def sync(self, timeout_s: float = 10.0) -> bool: ...
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

    def sync(self, timeout_s: float = 10.0) -> bool:
        return True

    def close(self) -> None:
        pass


class OutboxWriteError(Exception):
    """The writer thread could not commit to the outbox file (disk full, file gone): the rows
    stay in the mirror, and are sent; only a station restart before their delivery loses them."""


_Op = tuple[str, tuple[object, ...]] | tuple[str, list[tuple[int]]] | threading.Event | None


class _Writer:
    """The one thread that touches the file after start: it takes what has queued, writes it in
    one transaction, and signals `sync` markers once everything before them is committed."""

    def __init__(self, db: sqlite3.Connection, name: str) -> None:
        self._db = db
        self._ops: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        # Writes made during an event loop's turn, handed to the thread at the next turn (see
        # the module's docstring); in order with the rest, under the lock.
        self._held: list[_Op] = []
        self._handover_due = False
        self._lock = threading.Lock()
        self.errors = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"outbox-writer {name}", daemon=True)
        self._thread.start()

    def insert(self, row: tuple[object, ...]) -> None:
        self._put(("insert", row))

    def delete(self, ids: list[int]) -> None:
        self._put(("delete", [(i,) for i in ids]))

    def _put(self, op: _Op) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._held.append(op)
            if loop is None:
                self._hand_over_locked()
            elif not self._handover_due:
                self._handover_due = True
                loop.call_soon(self.hand_over)

    def hand_over(self) -> None:
        """Give the thread what is held: at the loop's next turn, and before any wait on it."""
        with self._lock:
            self._hand_over_locked()

    def _hand_over_locked(self) -> None:
        for op in self._held:
            self._ops.put(op)
        self._held.clear()
        self._handover_due = False

    @property
    def queued(self) -> int:
        return len(self._held) + self._ops.qsize()

    def sync(self, timeout_s: float) -> bool:
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._put(done)
        self.hand_over()
        return done.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._put(None)
            self.hand_over()
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            batch = [self._ops.get()]
            while True:  # everything queued meanwhile goes into the same transaction
                try:
                    batch.append(self._ops.get_nowait())
                except queue.Empty:
                    break
            writes = [op for op in batch if isinstance(op, tuple)]
            if writes:
                self._write(writes)
            for op in batch:
                if isinstance(op, threading.Event):
                    op.set()
            if any(op is None for op in batch):
                return

    def _write(self, writes: list[tuple[str, Any]]) -> None:
        try:
            self._db.execute("BEGIN")
            for kind, args in writes:
                if kind == "insert":
                    self._db.execute(INSERT, args)
                else:
                    self._db.executemany("DELETE FROM outbox WHERE id = ?", args)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if self.errors % 100 == 1:
                log.error(
                    "outbox file not written (%d times so far): %s; the messages stay in "
                    "memory and are sent, but would not survive a station restart",
                    self.errors, OutboxWriteError(self.last_error),
                )  # fmt: skip


INSERT = (
    "INSERT INTO outbox (id, topic, payload, retain, session, msg_id) VALUES (?, ?, ?, ?, ?, ?)"
)


class SqliteOutbox:
    """Ordered and persistent: a row per message, deleted once it is delivered (see above)."""

    def __init__(self, path: Path | str, *, durable: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Explicit transactions, on the writer thread only once it runs.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(SCHEMA)
        self._add_receipt_columns()
        rows = self._db.execute(
            "SELECT id, topic, payload, retain, session, msg_id FROM outbox ORDER BY id"
        ).fetchall()
        self._pending = _Pending(
            Pending(int(i), str(t), _blob(p), bool(r), s, m) for i, t, p, r, s, m in rows
        )
        self.recovered = len(self._pending)  # messages left over from an earlier run
        # AUTOINCREMENT's counter too: an id is never given twice, even after the rows are gone.
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        self._next = max(int(rows[-1][0]) if rows else 0, int(seq[0]) if seq else 0) + 1
        self._writer = _Writer(self._db, Path(self.path).name)

    @property
    def write_errors(self) -> int:
        return self._writer.errors

    @property
    def queued(self) -> int:
        """Writes not yet committed to the file."""
        return self._writer.queued

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
        item = Pending(self._next, topic, payload, retain, session, msg_id)
        self._next += 1
        self._pending.add(item)
        self._writer.insert((item.id, topic, payload, int(retain), session, msg_id))
        return item

    def head(self) -> Pending | None:
        return self._pending.head()

    def get(self, item_id: int) -> Pending | None:
        return self._pending.get(item_id)

    def after(self, item_id: int) -> Pending | None:
        return self._pending.after(item_id)

    def ack(self, item: Pending) -> None:
        if self._pending.remove(item.id) is not None:
            self._writer.delete([item.id])

    def confirm(self, session: str, through: int, stored: Iterable[Range] = ()) -> int:
        ids = self._pending.confirmed(session, through, stored)
        if ids:
            for i in ids:
                self._pending.remove(i)
            self._writer.delete(ids)  # one transaction, not one per row
        return len(ids)

    def find(self, session: str, wanted: Iterable[Range]) -> list[Pending]:
        return self._pending.select(session, wanted)

    def __len__(self) -> int:
        return len(self._pending)

    def sync(self, timeout_s: float = 10.0) -> bool:
        """Wait until the file holds every append and delete so far; False on a timeout."""
        return self._writer.sync(timeout_s)

    def close(self) -> None:
        self._writer.stop()
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
