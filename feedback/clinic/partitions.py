"""Daily partitions of the tables that grow (PostgreSQL), and the retention of old rows.

`live_seconds` (by `second`) and `events` (by `t`) are range-partitioned by day of the
station's clock (UTC days, epoch seconds), with a DEFAULT partition that catches a station
whose clock is far off. The logger's upkeep creates the partitions some days ahead and drops
those wholly older than the retention; SQLite, which has no partitions, deletes the old rows.
What is kept for ever (the clinical record: sessions, reps, cues, the message ledger) and why:
docs/storage.md.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, field

from feedback.clinic.db import Backend

log = logging.getLogger(__name__)

DAY_S = 86_400
PARTITIONED = {"live_seconds": "second", "events": "t"}  # table → its time column
AHEAD_DAYS = 7  # partitions made ahead of today, so a logger down for a week still finds them
RETENTION_DEFAULT_DAYS = 365
RETENTION_RANGE_DAYS = (7, 36_500)  # a week (tests, demonstrations) to a hundred years
# Rows dropped by age; quarantine by when it arrived (its payload has no trustworthy time).
RETAINED = {**PARTITIONED, "quarantine": "received_at"}
UPKEEP_LOCK = 7260503
_NAME = re.compile(r"_p(\d{8})$")


class RetentionOutOfRange(ValueError):
    """retention_days outside RETENTION_RANGE_DAYS."""


def check_retention(days: int) -> int:
    lo, hi = RETENTION_RANGE_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not lo <= days <= hi:
        raise RetentionOutOfRange(
            f"retention_days must be a whole number of days from {lo} to {hi}, not {days!r}"
        )
    return days


@dataclass(slots=True)
class Upkeep:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_rows: int = 0  # old rows deleted one by one (SQLite, PostgreSQL's DEFAULT partition)


def partition_name(table: str, day: int) -> str:
    date = datetime.datetime.fromtimestamp(day * DAY_S, datetime.UTC)
    return f"{table}_p{date:%Y%m%d}"


def _day_of(name: str) -> int | None:
    m = _NAME.search(name)
    if m is None:
        return None
    date = datetime.datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=datetime.UTC)
    return int(date.timestamp()) // DAY_S


def partitions(db: Backend, table: str) -> dict[str, int | None]:
    """Partition name → its day (None: the DEFAULT partition)."""
    rows = db.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(?)",
        (table,),
    )
    return {str(name): _day_of(str(name)) for (name,) in rows}


def ensure_day(db: Backend, table: str, day: int, *, existing: dict[str, int | None]) -> str | None:
    """Make the day's partition (in the caller's transaction); rows of that day already in
    the DEFAULT partition move into it (PostgreSQL refuses to attach over them otherwise).
    Returns its name if made now."""
    name = partition_name(table, day)
    if name in existing:
        return None
    column = PARTITIONED[table]
    lo, hi = day * DAY_S, (day + 1) * DAY_S
    db.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    db.execute(
        f"WITH moved AS (DELETE FROM {table}_default WHERE {column} >= ? AND {column} < ?"
        f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        (lo, hi),
    )
    db.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
    existing[name] = day
    return name


def upkeep(db: Backend, *, now: float, retention_days: int) -> Upkeep:
    """Partitions for yesterday to AHEAD_DAYS ahead; drop or delete what is older than the
    retention. One transaction; several loggers may run it at once (one waits)."""
    check_retention(retention_days)
    done = Upkeep()
    today = int(now // DAY_S)
    cutoff_day = today - retention_days  # partitions wholly before this day go
    cutoff = cutoff_day * DAY_S
    with db.transaction():
        if db.dialect != "postgresql":
            for table, column in RETAINED.items():
                done.deleted_rows += db.execute(
                    f"DELETE FROM {table} WHERE {column} < ?", (cutoff,)
                )
            return done
        db.execute("SELECT pg_advisory_xact_lock(?)", (UPKEEP_LOCK,))
        for table, column in PARTITIONED.items():
            existing = partitions(db, table)
            for day in range(today - 1, today + AHEAD_DAYS + 1):
                if (made := ensure_day(db, table, day, existing=existing)) is not None:
                    done.created.append(made)
            for name, first in sorted(existing.items()):
                if first is not None and first < cutoff_day:
                    db.execute(f"DROP TABLE {name}")
                    done.dropped.append(name)
            done.deleted_rows += db.execute(
                f"DELETE FROM {table}_default WHERE {column} < ?", (cutoff,)
            )
        done.deleted_rows += db.execute("DELETE FROM quarantine WHERE received_at < ?", (cutoff,))
    if done.created or done.dropped or done.deleted_rows:
        log.info("upkeep: partitions made %s, dropped %s; %d old rows deleted",
                 done.created, done.dropped, done.deleted_rows)  # fmt: skip
    return done
