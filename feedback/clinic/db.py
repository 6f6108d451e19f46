"""Two database backends behind one small interface: SQLite (default) and PostgreSQL (psycopg 3).

The store writes portable SQL with `?` placeholders; the PostgreSQL backend turns them into
psycopg's `%s`. DDL differs only in a few type names, which the backend supplies (`types`).
A batch's rows go into one statement as a `relation` (a WITH clause): SQLite's VALUES list,
PostgreSQL's unnest of one array a column, whose text is the same whatever the row count (so
psycopg parses it once and prepares it; a VALUES list of 500 rows cost ~3 ms to parse each time).
Both are synchronous: the logger calls them from a worker thread, one call at a time.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

Row = tuple[Any, ...]
Column = tuple[str, str]  # name, portable type: text, int, real or blob


class Backend(Protocol):
    dialect: str
    types: ClassVar[dict[str, str]]
    row_lock: str  # `SELECT ... ORDER BY key{row_lock}` locks rows in key order (or nothing)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def relation(
        self, name: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]: ...
    def transaction(self) -> Any: ...  # a context manager: commit on success, else roll back
    def savepoint(self) -> Any: ...
    def lock_for_migration(self) -> None: ...
    def close(self) -> None: ...


class SqliteBackend:
    dialect = "sqlite"
    row_lock = ""  # BEGIN IMMEDIATE: one writer at a time already
    types: ClassVar[dict[str, str]] = {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "int": "INTEGER",
        "real": "REAL",
        "blob": "BLOB",
    }

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=10000")  # several loggers may share one file
        self._wal()
        self._db.execute("PRAGMA synchronous=NORMAL")

    def _wal(self, patience_s: float = 10.0) -> None:
        """Switch to WAL, waiting for a logger that is creating the schema in the same file:
        while it holds the write lock, the switch fails at once (SQLite refuses to wait there,
        since waiting could deadlock) instead of waiting on the busy timeout."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def relation(
        self, name: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """`name (columns) AS (VALUES ...)` for a WITH clause, and its parameters (at most
        32,766 a statement: the caller splits)."""
        if not rows:
            raise ValueError("a relation needs at least one row")
        one = "(" + ", ".join("?" * len(columns)) + ")"
        cols = ", ".join(c for c, _ in columns)
        return f"{name} ({cols}) AS (VALUES {', '.join([one] * len(rows))})", [
            v for r in rows for v in r
        ]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # IMMEDIATE: take the write lock now, so two loggers never deadlock upgrading a read lock.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._db.execute("SAVEPOINT one")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK TO one")
            self._db.execute("RELEASE one")
            raise
        self._db.execute("RELEASE one")

    def lock_for_migration(self) -> None:
        pass  # BEGIN IMMEDIATE already serialises writers

    def close(self) -> None:
        self._db.close()


class PostgresBackend:
    dialect = "postgresql"
    row_lock = " FOR UPDATE"
    types: ClassVar[dict[str, str]] = {
        "serial": "BIGSERIAL PRIMARY KEY",
        "int": "BIGINT",
        "real": "DOUBLE PRECISION",
        "blob": "BYTEA",
    }

    def __init__(self, url: str) -> None:
        import psycopg  # the optional 'postgres' extra

        self._idle = psycopg.pq.TransactionStatus.IDLE

        self.url = url
        self._db = psycopg.connect(url, autocommit=True)
        self._scratch: set[str] = set()  # temporary tables this connection has (`relation`)
        self._filled: set[str] = set()  # of them, filled in this transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._db.cursor() as cur:
            cur.execute(_pg(sql), params)
            return cur.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._db.cursor() as cur:
            cur.execute(_pg(sql), params)
            return list(cur.fetchall())

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # psycopg 3 pipelines executemany: one round trip for all the rows, not one each.
        with self._db.cursor() as cur:
            cur.executemany(_pg(sql), rows)

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """A plain `INSERT INTO t [(columns)] VALUES (?, ...)` of many rows as one COPY: a
        pipelined executemany spends ~15 us of Python a row, COPY's rows are formatted in C.
        Anything else (an upsert) goes to executemany."""
        m = _PLAIN_INSERT.fullmatch(sql)
        if m is None:
            self.executemany(sql, rows)
            return
        table, columns = m.groups()
        with (
            self._db.cursor() as cur,
            cur.copy(f"COPY {table}{f' ({columns})' if columns else ''} FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def relation(
        self, name: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """`name (columns) AS (SELECT columns FROM <a temporary table>)`, the rows copied into
        it now (COPY: formatted in C) and read by the statement that comes next. Was one array
        a column to unnest, which psycopg dumps in Python: 150 rows of `live_seconds` took
        8.0 ms of CPU, by COPY 1.6 (and half the wall time). The table (one per name and column
        list, a connection's own) is emptied at each commit, and before it is filled again.
        Int and real values are made the column's type (COPY reads 3.0 as no bigint)."""
        if not rows:
            raise ValueError("a relation needs at least one row")
        if self._db.info.transaction_status == self._idle:  # autocommit: emptied once copied
            raise RuntimeError("a relation is read in the transaction that made it")
        table = self._scratch_table(name, columns)
        if table in self._filled:
            self.execute(f"DELETE FROM {table}")
        with self._db.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
            for row in _typed(rows, columns):
                copy.write_row(row)
        self._filled.add(table)
        cols = ", ".join(c for c, _ in columns)
        return f"{name} ({cols}) AS (SELECT {cols} FROM {table})", []

    def _scratch_table(self, name: str, columns: Sequence[Column]) -> str:
        spec = ", ".join(f"{c} {_PG_TYPE[t]}" for c, t in columns)
        # By name too: two relations of one statement with the same columns must not share
        # (the second fill would empty the first).
        table = "vmf_rows_" + hashlib.sha1(f"{name}: {spec}".encode()).hexdigest()[:12]
        if table not in self._scratch:
            # Made in the transaction: gone again if it rolls back (`_rolled_back`).
            self.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {table} ({spec}) ON COMMIT DELETE ROWS"
            )
            self._scratch.add(table)
        return table

    def _rolled_back(self) -> None:
        # Made again (IF NOT EXISTS) when next used. `_filled` stays: a savepoint rolled back
        # brings back the rows copied before it, so the next fill must empty the table first.
        self._scratch.clear()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._filled.clear()
        try:
            with self._db.transaction():
                yield
        except BaseException:
            self._rolled_back()
            raise
        finally:
            self._filled.clear()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        try:
            with self._db.transaction():  # nested in a transaction, psycopg makes a savepoint
                yield
        except BaseException:
            self._rolled_back()
            raise

    def lock_for_migration(self) -> None:
        # Several logger instances may start together; one migrates, the others wait for it.
        self.execute("SELECT pg_advisory_xact_lock(7260501)")

    def close(self) -> None:
        self._db.close()


_PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) (?:\(([\w, ]+)\) )?VALUES \([?, ]+\)")
_PG_TYPE = {"text": "text", "int": "bigint", "real": "float8", "blob": "bytea"}
_PY_TYPE: dict[str, Any] = {"text": str, "int": int, "real": float, "blob": bytes}


def _typed(rows: Sequence[Sequence[Any]], columns: Sequence[Column]) -> Sequence[Sequence[Any]]:
    """The rows with each int and real column's values made that Python type, column by
    column: a column already of its type (nearly always) is seen by `map(type, ...)` in C and
    left as it is. Converting row by row cost ~1.5 us a ledger row (three columns)."""
    convert = [(i, _PY_TYPE[t]) for i, (_, t) in enumerate(columns) if t in ("int", "real")]
    if not convert or not rows:
        return rows
    cols: list[Sequence[Any]] | None = None
    for i, to in convert:
        col = [row[i] for row in rows] if cols is None else cols[i]
        if set(map(type, col)) <= {to, type(None)}:
            continue
        if cols is None:
            cols = [list(c) for c in zip(*rows, strict=True)]
        cols[i] = [None if v is None else to(v) for v in cols[i]]
    return rows if cols is None else list(zip(*cols, strict=True))


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class DatabaseMissing(LookupError):
    """A reader was pointed at a SQLite file that does not exist (it is not created)."""


def connect(url: str, *, must_exist: bool = False) -> Backend:
    """`postgresql://...` (or `postgres://`), `sqlite:///PATH`, or a plain file path.
    `must_exist`: a reader's open, which refuses to create an empty SQLite file."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    if "://" in url and not url.startswith("sqlite:///"):
        raise ValueError(f"database URL: postgresql://..., sqlite:///PATH or a path, not {url!r}")
    path = url.removeprefix("sqlite:///")
    if must_exist and path != ":memory:" and not Path(path).is_file():
        raise DatabaseMissing(f"no database file at {path}")
    return SqliteBackend(path)
