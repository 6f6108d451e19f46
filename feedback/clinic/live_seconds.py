"""`live` kept at 1 Hz: one row per session and second of the station's clock, folded from the
10 Hz live messages (docs/storage.md).

A row says how many messages fell in that second, which (`msg_id_min`, `msg_id_max` and a bit
set of the msg_ids received, so a copy is recognised and counted once), and for each field a
report draws the minimum, mean and maximum (% MVC per channel, the VM:VL ratio), with the
phase and rep count of the latest message. Rows merge exactly: folding messages one by one,
in any order and any batching, gives the same row (the means to their rounding).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedback.clinic.db import Backend

MAX_SPAN = 65_536  # msg_ids one second's row may span (8 kB of bits); beyond, not live at 10 Hz

COLUMNS = (
    "session_id", "second", "count", "msg_id_min", "msg_id_max", "msg_ids", "t_first", "t_last",
    "index_min", "index_max", "phase", "reps", "ratio_n", "ratio_min", "ratio_mean",
    "ratio_max", "pct_json",
)  # fmt: skip
TYPES = (
    "text", "int", "int", "int", "int", "blob", "real", "real", "int", "int", "text", "int", "int",
    "real", "real", "real", "text",
)  # fmt: skip


class LiveSpanError(ValueError):
    """A live message whose msg_id is too far from the others of its second to be one of them."""


@dataclass(slots=True)
class Stat:
    """Count, minimum, mean and maximum of one field, mergeable one value at a time."""

    n: int = 0
    lo: float | None = None
    mean: float | None = None
    hi: float | None = None

    def add(self, x: float) -> None:
        self.n += 1
        if self.lo is None or self.mean is None or self.hi is None:
            self.lo = self.mean = self.hi = x
            return
        self.lo, self.hi = min(self.lo, x), max(self.hi, x)
        self.mean += (x - self.mean) / self.n

    def merge(self, other: Stat) -> None:
        if other.n == 0 or other.lo is None or other.mean is None or other.hi is None:
            return
        if self.n == 0 or self.lo is None or self.mean is None or self.hi is None:
            self.n, self.lo, self.mean, self.hi = other.n, other.lo, other.mean, other.hi
            return
        n = self.n + other.n
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.mean += (other.mean - self.mean) * other.n / n
        self.n = n

    def as_list(self) -> list[Any]:
        return [self.n, self.lo, self.mean, self.hi]


@dataclass(slots=True)
class Second:
    session_id: str
    second: int
    count: int = 0
    msg_id_min: int = 0
    msg_id_max: int = 0
    mask: int = 0  # bit i: msg_id_min + i was received
    t_first: float = math.inf
    t_last: float = -math.inf
    index_min: int | None = None
    index_max: int | None = None
    phase: str | None = None
    reps: int | None = None
    ratio: Stat = field(default_factory=Stat)
    pct: dict[str, Stat] = field(default_factory=dict)
    dirty: bool = False

    def has(self, msg_id: int) -> bool:
        return (
            self.count > 0
            and 0 <= msg_id - self.msg_id_min < self.mask.bit_length()
            and bool(self.mask >> (msg_id - self.msg_id_min) & 1)
        )

    def add(self, body: Mapping[str, Any]) -> None:
        """Fold one live message (already checked against the contract, not a copy).
        Comparisons and locals, not min()/max() and Stat.add calls: it runs for every live
        message, ~90 % of the logger's intake (bench/fold: 13.7 -> 5 us a message)."""
        msg_id, t = int(body["msg_id"]), float(body["t"])
        if self.count == 0:
            self.msg_id_min = self.msg_id_max = msg_id
        else:
            lo, hi = self.msg_id_min, self.msg_id_max
            if (msg_id if msg_id > hi else hi) - (msg_id if msg_id < lo else lo) >= MAX_SPAN:
                raise LiveSpanError(
                    f"live msg_id {msg_id} is more than {MAX_SPAN} from the others of second "
                    f"{self.second} ({lo}–{hi})"
                )
            if msg_id < lo:
                self.mask <<= lo - msg_id
                self.msg_id_min = msg_id
        self.mask |= 1 << (msg_id - self.msg_id_min)
        if msg_id >= self.msg_id_max:  # the latest message says the current phase and reps
            self.msg_id_max = msg_id
            self.phase, self.reps = body.get("phase"), body.get("reps")
        self.count += 1
        if t < self.t_first:
            self.t_first = t
        if t > self.t_last:
            self.t_last = t
        if (index := body.get("index")) is not None:
            if self.index_min is None or index < self.index_min:
                self.index_min = index
            if self.index_max is None or index > self.index_max:
                self.index_max = index
        if (ratio := body.get("vm_vl_ratio")) is not None:
            _add(self.ratio, float(ratio))
        pct = self.pct
        for channel, value in body["pct_mvc"].items():
            x = float(value)
            if (stat := pct.get(channel)) is None:  # not setdefault: a Stat made a call costs
                pct[channel] = Stat(1, x, x, x)
            else:
                _add(stat, x)
        self.dirty = True

    def merge(self, other: Second) -> None:
        """Fold another row of the same second, whose msg_ids this one does not hold: as if
        its messages were added one by one, but for the means' rounding."""
        if other.msg_id_min < self.msg_id_min:
            self.mask = self.mask << (self.msg_id_min - other.msg_id_min) | other.mask
            self.msg_id_min = other.msg_id_min
        else:
            self.mask |= other.mask << (other.msg_id_min - self.msg_id_min)
        if other.msg_id_max > self.msg_id_max:
            self.msg_id_max, self.phase, self.reps = other.msg_id_max, other.phase, other.reps
        self.count += other.count
        self.t_first, self.t_last = min(self.t_first, other.t_first), max(self.t_last, other.t_last)
        self.index_min = _least(min, self.index_min, other.index_min)
        self.index_max = _least(max, self.index_max, other.index_max)
        self.ratio.merge(other.ratio)
        for channel, stat in other.pct.items():
            if (mine := self.pct.get(channel)) is None:
                self.pct[channel] = Stat(stat.n, stat.lo, stat.mean, stat.hi)
            else:
                mine.merge(stat)
        self.dirty = True

    def row(self) -> tuple[Any, ...]:
        bits = self.mask.to_bytes((self.mask.bit_length() + 7) // 8 or 1, "little")
        pct = {ch: s.as_list() for ch, s in sorted(self.pct.items())}
        return (
            self.session_id, self.second, self.count, self.msg_id_min, self.msg_id_max, bits,
            self.t_first, self.t_last, self.index_min, self.index_max, self.phase, self.reps,
            self.ratio.n, self.ratio.lo, self.ratio.mean, self.ratio.hi,
            json.dumps(pct, separators=(",", ":")),
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Second:
        r = dict(zip(COLUMNS, row, strict=True))
        pct = {ch: Stat(int(v[0]), v[1], v[2], v[3]) for ch, v in json.loads(r["pct_json"]).items()}
        return cls(
            r["session_id"], int(r["second"]), int(r["count"]), int(r["msg_id_min"]),
            int(r["msg_id_max"]), int.from_bytes(bytes(r["msg_ids"]), "little"),
            float(r["t_first"]), float(r["t_last"]), r["index_min"], r["index_max"], r["phase"],
            r["reps"], Stat(int(r["ratio_n"]), r["ratio_min"], r["ratio_mean"], r["ratio_max"]),
            pct,
        )  # fmt: skip


def _add(stat: Stat, x: float) -> None:
    """Stat.add, inlined for the fold's loop (the same arithmetic, in the same order)."""
    n = stat.n = stat.n + 1
    lo, mean, hi = stat.lo, stat.mean, stat.hi
    if lo is None or mean is None or hi is None:
        stat.lo = stat.mean = stat.hi = x
        return
    if x < lo:
        stat.lo = x
    if x > hi:
        stat.hi = x
    stat.mean = mean + (x - mean) / n


def _least(pick: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    """min or max of two values either of which may be None (no index)."""
    return b if a is None else a if b is None else pick(a, b)


def second_of(t: float) -> int:
    return math.floor(t)


def msg_ids(row: Second) -> list[int]:
    """The msg_ids a row holds (for tests and audits)."""
    return [row.msg_id_min + i for i in range(row.mask.bit_length()) if row.mask >> i & 1]


UPSERT = (
    f"INSERT INTO live_seconds ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    " ON CONFLICT (session_id, second) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM live_seconds"
# The batch's rows (a relation `r`, db.py) in one statement, whatever their number.
UPSERT_ROWS = (
    f" INSERT INTO live_seconds ({', '.join(COLUMNS)}) SELECT * FROM r WHERE true"
    " ON CONFLICT (session_id, second) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
)
BOUNDS = (("sid", "text"), ("lo_s", "int"), ("hi_s", "int"), ("lo_id", "int"), ("hi_id", "int"))
# The write's rows a statement: SQLite binds a relation's values (32,766 at most, 17 a row), so
# a batch of store.MAX_BATCH messages in as many seconds needs two; PostgreSQL's go by COPY.
ROWS_PER_STATEMENT = 1900

DEDUPE_WINDOW_S = 86_400  # a copy is looked for among the rows of a day either side of its time
_LS = ", ".join(f"ls.{c}" for c in COLUMNS)


def lock_key(session: str) -> int:
    """The session's PostgreSQL advisory lock (a signed 64-bit key)."""
    return int.from_bytes(hashlib.sha256(b"live_seconds:" + session.encode()).digest()[:8],
                          "big", signed=True)  # fmt: skip


def fold(
    db: Backend, pending: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, list[str | None]]:
    """Fold a batch's live messages (by session) into their rows: for each message None
    (stored) or why not (a copy of a stored msg_id, or a msg_id no second can hold). Three
    statements a batch, whatever its sessions: lock, read, write.

    Read, merge, write: on PostgreSQL a transaction lock per session keeps two loggers (a
    shared subscription splits a session's messages between them) from losing each other's
    update, taken in one order (by key) so two batches never wait on each other in a circle;
    SQLite's BEGIN IMMEDIATE already serialises writers. The other logger waits for that lock
    (two loggers' batches hold the same sessions), so the per-message work comes before it:
    each session's messages are folded among themselves first (`Batch`), and under the lock
    only these rows meet the stored ones."""
    if not pending:
        return {}
    batches = {session: Batch(session, bodies) for session, bodies in pending.items()}
    if db.dialect == "postgresql":
        keys = sorted({lock_key(s) for s in pending})
        db.query("SELECT pg_advisory_xact_lock(k) FROM unnest(?::bigint[]) AS k", (keys,))
    bounds: list[tuple[str, int, int, int, int]] = []
    for session, bodies in pending.items():
        seconds = [second_of(float(b["t"])) for b in bodies]
        ids = [int(b["msg_id"]) for b in bodies]
        bounds.append((session, min(seconds), max(seconds), min(ids), max(ids)))
    # The rows of the batch's seconds (by the key), and those whose msg_id range reaches the
    # batch's msg_ids (by msg_id_max: in-order messages find only the latest). The constant
    # time bounds let PostgreSQL read only a few days' partitions.
    rows: dict[tuple[str, int], Second] = {}
    lo = min(b[1] for b in bounds) - DEDUPE_WINDOW_S
    hi = max(b[2] for b in bounds) + DEDUPE_WINDOW_S
    q, params = db.relation("q", BOUNDS, bounds)
    for row in db.query(
        f"WITH {q} SELECT {_LS} FROM live_seconds ls JOIN q ON ls.session_id = q.sid"
        " AND ls.second >= q.lo_s AND ls.second <= q.hi_s WHERE ls.second BETWEEN ? AND ?"
        f" UNION ALL SELECT {_LS} FROM live_seconds ls JOIN q ON ls.session_id = q.sid"
        " AND ls.msg_id_max >= q.lo_id AND ls.msg_id_min <= q.hi_id"
        f" AND ls.second >= q.lo_s - {DEDUPE_WINDOW_S}"
        f" AND ls.second <= q.hi_s + {DEDUPE_WINDOW_S} WHERE ls.second BETWEEN ? AND ?",
        (*params, lo, hi, lo, hi),
    ):
        r = Second.from_row(row)
        rows[(r.session_id, r.second)] = r
    known: dict[str, list[Second]] = {}
    for r in rows.values():
        known.setdefault(r.session_id, []).append(r)
    outcomes: dict[str, list[str | None]] = {}
    for session, batch in batches.items():
        outcomes[session] = batch.fold_into(known.get(session, []), rows)
    changed = sorted(r.row() for r in rows.values() if r.dirty)  # in key order: the lock order
    for i in range(0, len(changed), ROWS_PER_STATEMENT):
        rel, params = db.relation("r", tuple(zip(COLUMNS, TYPES, strict=True)),
                                changed[i : i + ROWS_PER_STATEMENT])  # fmt: skip
        db.execute(f"WITH {rel}{UPSERT_ROWS}", params)
    return outcomes


class Batch:
    """One session's messages of a batch folded among themselves, without the stored rows:
    their copies within the batch and their spans already refused (`_merge`)."""

    def __init__(self, session: str, bodies: Sequence[Mapping[str, Any]]) -> None:
        self.session, self.bodies = session, bodies
        self.rows: dict[tuple[str, int], Second] = {}
        self.outcome = _merge(session, bodies, [], self.rows)

    def fold_into(
        self, known: list[Second], rows: dict[tuple[str, int], Second]
    ) -> list[str | None]:
        """Into the session's stored rows (`known`, also in `rows` by key, where new rows go
        too): each of this batch's rows merged into the stored row of its second. If a stored
        row holds one of the batch's msg_ids (a copy) or a merged row would span too many,
        message by message instead, as without the batch's rows, so that exactly those
        messages are refused."""
        if self._clashes(known, rows):
            return _merge(self.session, self.bodies, known, rows)
        for key, mine in self.rows.items():
            if (stored := rows.get(key)) is None:
                rows[key] = mine
                known.append(mine)
            else:
                stored.merge(mine)
        return self.outcome

    def _clashes(self, known: list[Second], rows: dict[tuple[str, int], Second]) -> bool:
        return any(
            _too_wide(mine, rows.get(key)) or any(_overlap(mine, stored) for stored in known)
            for key, mine in self.rows.items()
        )


def _overlap(a: Second, b: Second) -> bool:
    """Whether two rows hold a msg_id in common."""
    if a.msg_id_max < b.msg_id_min or b.msg_id_max < a.msg_id_min:
        return False
    if a.msg_id_min >= b.msg_id_min:
        return bool(a.mask << (a.msg_id_min - b.msg_id_min) & b.mask)
    return bool(b.mask << (b.msg_id_min - a.msg_id_min) & a.mask)


def _too_wide(a: Second, b: Second | None) -> bool:
    return b is not None and (
        max(a.msg_id_max, b.msg_id_max) - min(a.msg_id_min, b.msg_id_min) >= MAX_SPAN
    )


def _merge(
    session: str,
    bodies: Sequence[Mapping[str, Any]],
    known: list[Second],
    rows: dict[tuple[str, int], Second],
) -> list[str | None]:
    ids = [int(b["msg_id"]) for b in bodies]
    outcome: list[str | None] = [None] * len(bodies)
    # A copy is a msg_id folded here before, or one a row read from the database holds: only
    # a msg_id within their range can be one of those (in-order messages are all above it).
    folded: set[int] = set()
    lo = min((r.msg_id_min for r in known), default=0)
    hi = max((r.msg_id_max for r in known), default=-1)
    held = list(known)
    second, row = None, None
    for i in sorted(range(len(bodies)), key=ids.__getitem__):
        msg_id = ids[i]
        if msg_id in folded or (lo <= msg_id <= hi and any(r.has(msg_id) for r in held)):
            outcome[i] = f"duplicate live ({session}, {msg_id})"
            continue
        s = math.floor(float(bodies[i]["t"]))
        if s != second or row is None:
            second, row = s, rows.get((session, s))
            if row is None:
                row = Second(session, s)
        try:
            row.add(bodies[i])
        except LiveSpanError as exc:
            outcome[i] = str(exc)
            continue
        folded.add(msg_id)
        if (session, s) not in rows:
            rows[(session, s)] = row
            known.append(row)
    return outcome
