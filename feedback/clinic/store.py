"""The clinic database: validates, de-duplicates and stores batches of received MQTT messages.

One batch is one transaction. Each message is checked against the contract (validation.py);
an invalid one goes to `quarantine` with the reason, whatever the check raised. A valid one
must come from its station's clinic (`station_clinics`: where the station id first sent) and
from the station that owns its session (`session_owners`: the first to send a message of it),
then claims its (session, msg_id) in `messages` (the de-duplication ledger, whose `seq`
also records arrival order: batch by batch, and within a batch by msg_id). A second copy
loses that claim: with identical bytes (a resend or a redelivery) it is dropped and counted
(`session_owners.duplicates`); with other content (a replay or a forgery) it is quarantined.
Per session the batch then advances `stored_through` and yields the receipt and the holes
(`Delivery`) that the logger sends to the station. Each step is one statement (or a few) for
the whole batch, taking its row locks in key order (`_ingest_many`).
Live messages (own msg_id counter, no receipts) are not in the ledger: at the batch's end they
are folded into one row per session and second (`live_seconds`, live_seconds.py), whose msg_id
bit sets recognise a copy. Partitions and retention: partitions.py, docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from feedback.clinic import live_seconds, partitions
from feedback.clinic.db import Backend, connect
from feedback.clinic.migrations import migrate
from feedback.clinic.validation import (
    EVENT_TYPES,
    MAX_PAYLOAD_BYTES,
    InvalidMessage,
    Message,
    check,
)
from feedback.outputs.receipts import Range, holes, ranges

log = logging.getLogger(__name__)

ENVELOPE = ("v", "type", "session", "msg_id", "t")
OWNERS_CACHED = 100_000  # sessions whose owner is kept in memory (then the cache starts over)
ABOVE_READ = 10_000  # msg_ids above a session's watermark read per batch (bounds a long hole)
LEDGER = (
    ("session_id", "text"), ("msg_id", "int"), ("type", "text"), ("clinic", "text"),
    ("station", "text"), ("t", "real"), ("received_at", "real"), ("sha256", "text"),
)  # fmt: skip
WATERMARKS = (("sid", "text"), ("dup", "int"), ("through", "int"))
# The most messages one batch may hold. Each statement carries a whole batch, so its bound
# values stay below SQLite's limit (32,766 since 3.32; the ledger's 8 values a row, 32,000)
# and PostgreSQL's (65,535), whose relations go by COPY and bind none. The loggers' batches
# are smaller (logger.MAX_BATCH, nats_logger.MAX_BATCH); a larger one is refused, not split
# into several statements.
MAX_BATCH = 4000
UPKEEP_EVERY_S = 3600  # partitions ahead and retention (partitions.py)
QUARANTINE_KEEP_BYTES = 4096  # enough to see what it was; the hash identifies the whole


@dataclass(slots=True)  # not frozen: ~1.7 us less a message (validation.Message says why)
class Incoming:
    topic: str
    payload: bytes
    received_at: float
    # The contract's verdict (the message, or why it is refused) when checked ahead of the
    # transaction (`ClinicStore.check_ahead`); None: the store checks it.
    verdict: Message | str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one batch means for one session: the station's receipt, and the holes to fill."""

    clinic: str
    station: str
    session: str
    through: int  # every msg_id from 1 to it is stored
    stored: tuple[Range, ...]  # stored above `through`
    missing: tuple[Range, ...]  # not stored, below the highest stored


@dataclass(slots=True)
class IngestResult:
    stored: int = 0
    duplicates: int = 0  # identical copies of stored messages: dropped
    invalid: int = 0  # quarantined (with the reason)
    unstorable: int = 0  # refused even by the quarantine table: logged with its hash
    reasons: list[str] = field(default_factory=list)
    # (clinic, station, session) → identical copies dropped, for each session in the ledger
    touched: dict[tuple[str, str, str], int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)  # read or bound
    clinics: dict[str, str] = field(default_factory=dict)  # station → clinic, read or bound

    def add(self, other: IngestResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.invalid += other.invalid
        self.unstorable += other.unstorable

    def merge(self, other: IngestResult) -> None:
        """`add`, and what the batch's end still needs: sessions touched, bindings, reasons."""
        self.add(other)
        self.reasons += other.reasons
        for key, copies in other.touched.items():
            self.touched[key] = self.touched.get(key, 0) + copies
        self.owners.update(other.owners)
        self.clinics.update(other.clinics)


class ClinicStore:
    def __init__(
        self,
        url: str,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        retention_days: int = partitions.RETENTION_DEFAULT_DAYS,
    ) -> None:
        self.url = url
        self.retention_days = partitions.check_retention(retention_days)
        self.db: Backend = connect(url)
        self.max_payload_bytes = max_payload_bytes
        # A cancelled asyncio.to_thread call keeps running in its thread: never let a second
        # batch share the connection with it.
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[str, str]] = {}  # session → (clinic, station), committed
        self._clinics: dict[str, str] = {}  # station → clinic, committed
        self.upkeep_failures = 0
        self._next_upkeep = 0.0
        # Rows whose outcome nothing in the batch waits for, by statement: written with one
        # insert_many each (None: written at once, as when isolating).
        self._pending: dict[str, list[tuple[Any, ...]]] | None = None
        migrate(self.db)
        self.upkeep()

    def upkeep(self, now: float | None = None) -> partitions.Upkeep:
        """Partitions ahead (PostgreSQL) and rows past the retention gone: on opening, then
        with the first batch after each UPKEEP_EVERY_S (ingest)."""
        with self._lock:
            return self._upkeep_locked(time.time() if now is None else now)

    def _upkeep_locked(self, now: float) -> partitions.Upkeep:
        self._next_upkeep = now + UPKEEP_EVERY_S
        return partitions.upkeep(self.db, now=now, retention_days=self.retention_days)

    def _upkeep_if_due(self) -> None:
        now = time.time()
        if now < self._next_upkeep:
            return
        try:
            self._upkeep_locked(now)
        except Exception as exc:
            if is_connection_fault(exc):
                raise
            # Not the batch's fault: it is stored; partitions were made days ahead.
            self.upkeep_failures += 1
            log.error("upkeep failed (retried in %d s): %s", UPKEEP_EVERY_S, _describe(exc))

    def close(self) -> None:
        self.db.close()

    def reconnect(self) -> None:
        with self._lock:
            try:
                self.db.close()
            finally:
                self.db = connect(self.url)

    def stored_through(self, sessions: Sequence[str]) -> dict[str, int]:
        """The highest msg_id stored without a hole, per session (the ones it knows), as
        committed: what an order gate in front of the store compares with."""
        out: dict[str, int] = {}
        with self._lock:  # the connection serves one call at a time
            for i in range(0, len(sessions), 500):
                chunk = list(sessions[i : i + 500])
                marks = ", ".join("?" * len(chunk))
                rows = self.db.query(
                    "SELECT session_id, stored_through FROM session_owners"
                    f" WHERE session_id IN ({marks})",
                    chunk,
                )
                out.update({str(s): int(t) for s, t in rows})
        return out

    def ingest(self, batch: list[Incoming]) -> IngestResult:
        """Store a batch in one transaction; if the database refuses one message, the batch is
        redone message by message so that only that one is quarantined.

        Raises only a connection fault of the database (`is_connection_fault`), which the
        caller retries with the batch unacknowledged. Anything else a message causes, whatever
        its type (RecursionError from a deeply nested payload, MemoryError, a NUL that
        PostgreSQL's text refuses), quarantines that message: one message never stops the
        logger. A batch holds at most MAX_BATCH messages (ValueError)."""
        if len(batch) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} messages, not {len(batch)}")
        with self._lock:
            self._upkeep_if_due()
            return self._ingest_locked(batch)

    def _ingest_locked(self, batch: list[Incoming]) -> IngestResult:
        try:
            with self.db.transaction():
                self._pending = {}
                try:
                    result = self._ingest_all(batch, isolate=False)
                    self._flush()
                finally:
                    self._pending = None
                self._deliveries(result)
            self._remember(result)
            return result
        except Exception as exc:
            if is_connection_fault(exc):
                raise  # the caller retries the batch, nothing is acked
            log.warning("batch refused (%s); storing message by message", _describe(exc))
        with self.db.transaction():
            result = self._ingest_all(batch, isolate=True)
            try:
                with self.db.savepoint():
                    self._deliveries(result)
            except Exception as exc:
                if is_connection_fault(exc):
                    raise
                # Without receipts the stations send again later: nothing is lost.
                log.error("receipts not computed: %s", _describe(exc))
                result.deliveries.clear()
        self._remember(result)
        return result

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        """A row whose rowcount nothing needs: deferred to the batch's insert_many."""
        if self._pending is None:
            self.db.execute(sql, params)
        else:
            self._pending.setdefault(sql, []).append(params)

    def _flush(self) -> None:
        """The deferred rows, one insert_many per statement. Order does not matter: the
        upserts into `sessions` (start, end) and `stations` (newer t wins) commute, and the
        other tables' rows are new (claimed in the ledger first)."""
        if self._pending is None:
            return
        for sql, rows in self._pending.items():
            if " DO UPDATE " in sql:  # two loggers may upsert the same rows: lock in key order
                rows.sort(key=lambda p: (p[0], p[1]))
            self.db.insert_many(sql, rows)
        self._pending.clear()

    def _remember(self, result: IngestResult) -> None:
        """Bindings committed never change (a session's station, a station's clinic), so they
        need not be read again."""
        if len(self._owners) + len(result.owners) > OWNERS_CACHED:
            self._owners.clear()
        self._owners.update(result.owners)
        if len(self._clinics) + len(result.clinics) > OWNERS_CACHED:
            self._clinics.clear()
        self._clinics.update(result.clinics)

    def _deliveries(self, result: IngestResult) -> None:
        """Per session touched by the batch: advance its watermark (every msg_id up to it is
        stored) and say what the receipt confirms and which msg_ids below the highest are
        missing (the logger asks the station for them). One read and one update for all the
        sessions (PostgreSQL: one round trip each cost ~0.1 ms, 3 a session). The read locks
        the sessions' rows in key order (two loggers updating the same sessions' rows in their
        own orders deadlocked: bench/loadtest.py, two instances) and sees the watermark another
        logger committed meanwhile."""
        touched = sorted(result.touched.items())
        through: dict[str, int] = {}
        above: dict[str, list[int]] = {}
        if not touched:
            return
        q, params = self.db.relation("q", (("sid", "text"),), [(s,) for (_, _, s), _ in touched])
        for session, mark, msg_id in self.db.query(
            f"WITH {q}, o AS (SELECT session_id, stored_through FROM session_owners"
            f" JOIN q ON session_id = q.sid ORDER BY session_id{self.db.row_lock})"
            + _ABOVE[self.db.dialect == "postgresql"],
            params,
        ):
            through[str(session)] = int(mark)
            if msg_id is not None:
                above.setdefault(str(session), []).append(int(msg_id))
        updates = []
        for (clinic, station, session), duplicates in touched:
            mark = through.get(session, 0)
            ids = above.get(session, [])
            for i in ids:
                if i != mark + 1:
                    break
                mark = i
            ids = [i for i in ids if i > mark]
            updates.append((session, duplicates, mark))
            result.deliveries.append(
                Delivery(
                    clinic, station, session, mark, tuple(ranges(ids)), tuple(holes(mark, ids))
                )
            )
        u, params = self.db.relation("u", WATERMARKS, updates)
        self.db.execute(
            f"WITH {u} UPDATE session_owners SET duplicates = duplicates + u.dup,"
            " stored_through = CASE WHEN stored_through < u.through THEN u.through"
            " ELSE stored_through END FROM u WHERE session_owners.session_id = u.sid",
            params,
        )

    def _ingest_all(self, batch: list[Incoming], *, isolate: bool) -> IngestResult:
        result = IngestResult()
        if not isolate:
            self._ingest_many(batch, result)
            return result
        for item in batch:
            part = IngestResult()
            try:
                with self.db.savepoint():
                    self._ingest_many([item], part)
            except Exception as exc:
                if is_connection_fault(exc):
                    raise
                # Rolled back with the savepoint: nothing of it counts.
                self._quarantine_safely(item, f"database refused it: {_describe(exc)}", result)
                continue
            result.merge(part)
        return result

    def _ingest_many(self, batch: list[Incoming], result: IngestResult) -> None:
        """The batch in phases, each one statement (or a few) for all its messages: check,
        bind new stations to their clinic and new sessions to their station, claim the ledger,
        store, fold the live messages. Each phase takes its row locks in key order, and the
        phases come in one order: two loggers never wait on each other in a circle (they did
        when each bound new sessions in the order their messages came: issue 13)."""
        checked = [(item, msg) for item in batch if (msg := self._check(item, result)) is not None]
        homes = self._bind_clinics(checked, result)
        placed: list[tuple[Incoming, Message, str | None]] = []  # with the message's session
        for item, msg in checked:
            if (home := homes[msg.station]) != msg.clinic:
                self._quarantine(item, f"station {msg.station} belongs to clinic {home}", result)
            else:
                placed.append((item, msg, _session_of(msg)))
        owners = self._bind_owners(placed, result)
        live: list[tuple[Incoming, Message]] = []
        claims: list[tuple[Incoming, Message]] = []
        for item, msg, session in placed:
            owner = owners[session] if session is not None else None
            if owner is not None and owner != (msg.clinic, msg.station):
                reason = f"session owned by another station ({owner[0]}/{owner[1]})"
                self._quarantine(item, reason, result)
            elif msg.type == "live":
                live.append((item, msg))  # stored (or refused) when folded
            else:
                claims.append((item, msg))
        self._claim_all(claims, result)
        # Before the fold: from its session locks to the commit, two loggers take turns.
        self._flush()
        self._fold_live(live, result)

    def check_ahead(self, batch: Sequence[Incoming]) -> None:
        """Check the messages against the contract now (each `verdict`), before `ingest`: CPU
        only, no database, no lock. The logger checks the next batch while this one's
        statements and commit wait for PostgreSQL (psycopg waits without the GIL): the check
        is about a third of the store's CPU, and the wait as much again."""
        for item in batch:
            item.verdict = self._verdict(item)

    def _verdict(self, item: Incoming) -> Message | str:
        try:
            return check(item.topic, item.payload, self.max_payload_bytes)
        except InvalidMessage as exc:
            return exc.reason
        except Exception as exc:  # whatever the parser raised, it is this message's fault
            return f"could not be checked: {_describe(exc)}"

    def _check(self, item: Incoming, result: IngestResult) -> Message | None:
        verdict = self._verdict(item) if item.verdict is None else item.verdict
        if isinstance(verdict, str):
            self._quarantine(item, verdict, result)
            return None
        return verdict

    def _fold_live(self, live: list[tuple[Incoming, Message]], result: IngestResult) -> None:
        """The batch's live messages into their sessions' 1 Hz rows; a copy of a stored
        msg_id is quarantined as before, when each live message had its own row."""
        by_session: dict[str, list[tuple[Incoming, Message]]] = {}
        for item, msg in live:
            by_session.setdefault(str(msg.body["session"]), []).append((item, msg))
        outcomes = live_seconds.fold(
            self.db, {s: [m.body for _, m in pending] for s, pending in by_session.items()}
        )
        for session, pending in by_session.items():
            for (item, _), refused in zip(pending, outcomes[session], strict=True):
                if refused is None:
                    result.stored += 1
                else:
                    self._quarantine(item, refused, result)

    def _bind_clinics(
        self, checked: list[tuple[Incoming, Message]], result: IngestResult
    ) -> dict[str, str]:
        """The clinic each station id belongs to: the first it sent a message in. A station id
        is one station; the same id in another clinic's tree is someone else's (or a
        mistake)."""
        homes: dict[str, str] = {}
        first: dict[str, tuple[Any, ...]] = {}
        for item, msg in checked:
            if (known := self._clinics.get(msg.station)) is not None:
                homes[msg.station] = known
            elif msg.station not in first:
                first[msg.station] = (msg.clinic, item.received_at)
        for station, (clinic,) in self._bind(
            "station_clinics", ("station", "clinic", "bound_at"), first
        ).items():
            homes[station] = result.clinics[station] = str(clinic)  # cached once committed
        return homes

    def _bind_owners(
        self, placed: list[tuple[Incoming, Message, str | None]], result: IngestResult
    ) -> dict[str, tuple[str, str]]:
        """The (clinic, station) each session belongs to: the first to send a message of it
        (its status and session_start, msg_id 1 and 2, go out first). Commands (the
        therapist's) and last wills (the broker's) belong to no session."""
        owners: dict[str, tuple[str, str]] = {}
        first: dict[str, tuple[Any, ...]] = {}
        for item, msg, session in placed:
            if session is None:
                continue
            if (known := self._owners.get(session)) is not None:
                owners[session] = known
            elif session not in first:
                first[session] = (msg.clinic, msg.station, item.received_at)
        for session, (clinic, station) in self._bind(
            "session_owners", ("session_id", "clinic", "station", "bound_at"), first
        ).items():
            owners[session] = result.owners[session] = (str(clinic), str(station))
        return owners

    def _bind(
        self, table: str, columns: tuple[str, ...], first: dict[str, tuple[Any, ...]]
    ) -> dict[str, tuple[Any, ...]]:
        """Bind each new key to its first claimant unless someone did before, and read what
        is bound (key → the columns between the key and bound_at). Two loggers may bind at
        once: the key decides, both read the winner; the rows go in key order, so neither
        can hold one new key the other waits for while waiting for one it holds (which
        deadlocked, issue 13). Two statements: the read must see what a concurrent logger
        committed while the insert waited for it."""
        if not first:
            return {}
        keys = sorted(first)
        self.db.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
            f" {_values(len(keys), len(columns))} ON CONFLICT DO NOTHING",
            [v for k in keys for v in (k, *first[k])],
        )
        read = ", ".join(columns[1:-1])
        return {
            str(key): tuple(values)
            for key, *values in self.db.query(
                f"SELECT {columns[0]}, {read} FROM {table}"
                f" WHERE {columns[0]} IN ({', '.join('?' * len(keys))})",
                keys,
            )
        }

    def _claim_all(self, claims: list[tuple[Incoming, Message]], result: IngestResult) -> None:
        """Claim each message's (session, msg_id) in the ledger, then store what was claimed.
        A second copy (in the ledger before, or earlier in the batch) is a resend or a
        redelivery when its bytes are the same (dropped, counted, receipted again: the
        station's receipt may have been lost), a replay or a forgery when not (quarantined,
        the evidence kept)."""
        ledger: list[tuple[Incoming, Message, tuple[str, int], str]] = []
        firsts: dict[tuple[str, int], tuple[Incoming, Message, str, int]] = {}
        for item, msg in claims:
            b = msg.body
            if msg.type == "status" and b["msg_id"] == 0:
                self._station_status(msg)  # a last will: not part of any session's sequence
                result.stored += 1
            elif msg.type == "command":
                if self._claim_command(msg, item):
                    result.stored += 1
                else:
                    self._quarantine(item, self._duplicate_reason(msg), result)
            else:
                key = (str(b["session"]), int(b["msg_id"]))
                digest = hashlib.sha256(item.payload).hexdigest()
                firsts.setdefault(key, (item, msg, digest, len(ledger)))
                ledger.append((item, msg, key, digest))
        if not ledger:
            return
        claimed = self._claim_ledger(firsts)
        stored = {key: firsts[key][2] for key in claimed}
        if len(claimed) < len(ledger):
            stored |= self._stored_digests([k for k in firsts if k not in claimed])
        for n, (item, msg, key, digest) in enumerate(ledger):
            touched = (msg.clinic, msg.station, key[0])
            if key in claimed and firsts[key][3] == n:
                self._store(msg)
                result.stored += 1
                result.touched.setdefault(touched, 0)
            elif stored.get(key) == digest:
                result.duplicates += 1
                result.touched[touched] = result.touched.get(touched, 0) + 1
            else:
                self._quarantine(item, self._duplicate_reason(msg), result)

    def _claim_ledger(
        self, firsts: dict[tuple[str, int], tuple[Incoming, Message, str, int]]
    ) -> set[tuple[str, int]]:
        """One insert for the batch's (session, msg_id)s, in key order (the lock order, and
        `seq`'s order within a batch); returns those claimed now."""
        rows = []
        for key in sorted(firsts):
            item, msg, digest, _ = firsts[key]
            rows.append((*key, msg.type, msg.clinic, msg.station, msg.body["t"],
                         item.received_at, digest))  # fmt: skip
        r, params = self.db.relation("r", LEDGER, rows)
        return {(str(s), int(i)) for s, i in self.db.query(
            f"WITH {r} INSERT INTO messages ({', '.join(c for c, _ in LEDGER)})"
            " SELECT * FROM r ORDER BY session_id, msg_id ON CONFLICT DO NOTHING"
            " RETURNING session_id, msg_id",
            params,
        )}  # fmt: skip

    def _stored_digests(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
        if not keys:  # the batch's copies were all of messages it claimed itself
            return {}
        return {
            (str(session), int(msg_id)): str(digest)
            for session, msg_id, digest in self.db.query(
                "SELECT session_id, msg_id, sha256 FROM messages WHERE (session_id, msg_id)"
                f" IN (VALUES {_values(len(keys), 2)})",
                [v for key in keys for v in key],
            )
        }

    def _claim_command(self, msg: Message, item: Incoming) -> bool:
        b = msg.body
        return self.db.execute(
            "INSERT INTO commands (clinic, station, issuer, msg_id, action, session_id, t,"
            " received_at, body_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (msg.clinic, msg.station, b["issuer"], b["msg_id"], b["action"], b["session"],
             b["t"], item.received_at, json.dumps(b)),
        ) == 1  # fmt: skip

    def _duplicate_reason(self, msg: Message) -> str:
        b = msg.body
        key = f"({b.get('session')}, {b['msg_id']})"
        if msg.type == "command":
            return f"duplicate {msg.type} {key}"
        return f"duplicate {key}: different content (replay or forgery)"

    def _store(self, msg: Message) -> None:
        b, kind = msg.body, msg.type
        if kind == "status":
            if b["msg_id"] != 0:
                self._station_status(msg)
        elif kind == "session_start":
            self._session_start(msg)
        elif kind == "session_end":
            self._write(
                "INSERT INTO sessions (session_id, clinic, station, ended_at, pain_after,"
                " summary_json) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
                " ended_at = excluded.ended_at, pain_after = excluded.pain_after,"
                " summary_json = excluded.summary_json",
                (b["session"], msg.clinic, msg.station, b["t"], b.get("pain_after"),
                 json.dumps(b["summary"])),
            )  # fmt: skip
        elif kind == "rep":
            self._write(
                "INSERT INTO reps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (b["session"], b["period"], b["msg_id"], b["t"], int(b["achieved"]), b.get("rep"),
                 b.get("at_index"), b.get("time_to_band_s"), b["peak_pct_mvc"],
                 b.get("mean_pct_mvc"), b["hold_s"], b["time_in_band_s"], b.get("vm_vl_ratio"),
                 b.get("onset_diff_ms"), b.get("symmetry_pct")),
            )  # fmt: skip
        elif kind == "cue":
            self._write(
                "INSERT INTO cues VALUES (?, ?, ?, ?, ?, ?, ?)",
                (b["session"], b["msg_id"], b["t"], b["kind"], b["value"], b["index"],
                 b["t_sample"]),
            )  # fmt: skip
        elif kind in EVENT_TYPES:
            detail = {k: v for k, v in b.items() if k not in ENVELOPE}
            self._write(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                (b["session"], b["msg_id"], b["t"], kind, json.dumps(detail)),
            )
        # command rows were written when claimed; live ones are folded (_fold_live)

    def _session_start(self, msg: Message) -> None:
        b = msg.body
        # The montage (where each electrode sat) is kept with the settings it came from: the
        # BIDS export reads it there (feedback/clinic/bids.py).
        settings = {**b["settings"], "montage": b["montage"]} if "montage" in b else b["settings"]
        self._write(
            "INSERT INTO sessions (session_id, clinic, station, patient, side, protocol,"
            " reps_prescribed, started_at, pain_before, settings_json, device_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
            " patient = excluded.patient, side = excluded.side, protocol = excluded.protocol,"
            " reps_prescribed = excluded.reps_prescribed, started_at = excluded.started_at,"
            " pain_before = excluded.pain_before, settings_json = excluded.settings_json,"
            " device_json = excluded.device_json",
            (b["session"], msg.clinic, msg.station, b["patient"], b["side"], b["protocol"],
             b.get("reps_prescribed"), b["t"], b.get("pain_before"), json.dumps(settings),
             json.dumps(b["device"])),
        )  # fmt: skip

    def _station_status(self, msg: Message) -> None:
        b = msg.body
        # Retained and possibly redelivered out of order: only a newer status replaces the row.
        self._write(
            "INSERT INTO stations VALUES (?, ?, ?, ?, ?) ON CONFLICT (clinic, station) DO UPDATE"
            " SET state = excluded.state, session_id = excluded.session_id, t = excluded.t"
            " WHERE excluded.t >= stations.t",
            (msg.clinic, msg.station, b["state"], b.get("session"), b["t"]),
        )

    def _quarantine(self, item: Incoming, reason: str, result: IngestResult) -> None:
        self._write(
            "INSERT INTO quarantine (received_at, topic, reason, size, sha256, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (item.received_at, _text(item.topic, 300), _text(reason, 500), len(item.payload),
             hashlib.sha256(item.payload).hexdigest(), item.payload[:QUARANTINE_KEEP_BYTES]),
        )  # fmt: skip
        result.invalid += 1
        result.reasons.append(reason)

    def _quarantine_safely(self, item: Incoming, reason: str, result: IngestResult) -> None:
        """Quarantine; if even that row is refused, log the message's hash and go on."""
        try:
            with self.db.savepoint():
                self._quarantine(item, reason, result)
        except Exception as exc:
            if is_connection_fault(exc):
                raise
            result.unstorable += 1
            result.reasons.append(reason)
            log.error(
                "message on %r (%d bytes, sha256 %s) could not even be quarantined: %s",
                _text(item.topic, 300), len(item.payload),
                hashlib.sha256(item.payload).hexdigest(), _describe(exc),
            )  # fmt: skip


def _session_of(msg: Message) -> str | None:
    """The session whose msg_id sequence the message is part of; None for a command (the
    therapist's) or a last will (the broker's, msg_id 0)."""
    session = msg.body.get("session")
    if msg.type == "command" or not isinstance(session, str) or msg.body["msg_id"] == 0:
        return None
    return session


# The ledger's msg_ids above each session's watermark (at most ABOVE_READ a session). PostgreSQL
# planned the window form as one merge join over the whole ledger's index (31 ms a batch at 20k
# rows, growing with the table); LATERAL makes it one index range scan a session. SQLite has no
# LATERAL, and already searches the window form's join by index (session_id = ? AND msg_id > ?).
_ABOVE = (
    ", a AS (SELECT m.session_id, m.msg_id, row_number() OVER"
    " (PARTITION BY m.session_id ORDER BY m.msg_id) AS n FROM messages m"
    " JOIN o ON m.session_id = o.session_id AND m.msg_id > o.stored_through)"
    " SELECT o.session_id, o.stored_through, a.msg_id FROM o LEFT JOIN a"
    f" ON a.session_id = o.session_id AND a.n <= {ABOVE_READ} ORDER BY 1, 3",
    " SELECT o.session_id, o.stored_through, a.msg_id FROM o LEFT JOIN LATERAL"
    " (SELECT m.msg_id FROM messages m WHERE m.session_id = o.session_id"
    f" AND m.msg_id > o.stored_through ORDER BY m.msg_id LIMIT {ABOVE_READ}) a ON true"
    " ORDER BY 1, 3",
)


def _values(rows: int, columns: int) -> str:
    one = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, RecursionError):
        return f"nested too deep ({name}: {exc})"
    return f"{name}: {exc}" if str(exc) else name


def _text(value: str, limit: int) -> str:
    """Storable text: PostgreSQL refuses NUL and lone surrogates, which a topic or an
    exception's message (quoting a payload) may hold."""
    clean = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return clean.replace("\x00", "\\0")[:limit]


def is_connection_fault(exc: BaseException) -> bool:
    """The database, not the message: the link or the server is down, busy or out of space.
    Only these are retried (with the batch unacknowledged); anything else is the message's."""
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):  # locked, disk I/O, unable to open, full
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
