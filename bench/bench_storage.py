"""Database size per station-hour, before (schema 3: one `live` row per 10 Hz message) and
after (schema 4: `live_seconds`, one row per second), in SQLite and PostgreSQL (issue 13).

    python -m bench.bench_storage [--stations 2] [--pg URL | --no-pg]  → bench/results/storage.json

A station-hour: three 20-minute sessions back to back, each with its status and start, 12,000
live messages at 10 Hz (VM and VL % MVC, VM:VL ratio, phase, reps, sample index, LSI, onsets),
30 repetitions (a rep, three cues, a contraction event and a stimulation burst each) and its
end. All of it goes through the logger's store (`ClinicStore.ingest`, batches of 500 in time
order across stations). The "before" database is schema 3 holding the same rows: every table
but `live` copied from the "after" one (they are written alike), and `live` one row per live
message as the schema-3 store wrote it. Sizes: SQLite file after a WAL checkpoint, then after
VACUUM; PostgreSQL `pg_total_relation_size` over the schema's tables (heap, TOAST, indexes),
as written (dead row versions of the per-second upserts included) and after VACUUM FULL; each
less the empty schema's size (PostgreSQL's empty partitions), divided by station-hours.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from feedback.clinic.db import Backend, connect
from feedback.clinic.migrations import migrate
from feedback.clinic.store import ClinicStore, Incoming
from feedback.outputs.topics import Topics

RESULTS = Path(__file__).with_name("results")
CLINIC = "clinic-bench"
COPIED = (
    "stations",
    "sessions",
    "messages",
    "reps",
    "cues",
    "events",
    "commands",
    "quarantine",
    "session_owners",
    "station_clinics",
)
V3_LIVE = "INSERT INTO live VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # the schema-3 store's statement


def station_hour(station: str, start: float, seed: int) -> list[tuple[float, Incoming]]:
    """One station's hour of messages, as (time, message)."""
    rng = random.Random(seed)
    topics = Topics(CLINIC, station)
    out: list[tuple[float, Incoming]] = []
    for s in range(3):
        sid = f"S20261201-{seed:04d}{s:02d}-{secrets.token_hex(3)}"
        t0 = start + s * 1200
        lossless, live_n = 0, 0

        def put(topic: str, type_: str, t: float, sid: str = sid, **body: Any) -> None:
            nonlocal lossless, live_n
            if type_ == "live":
                live_n += 1
                n = live_n
            else:
                lossless += 1
                n = lossless
            m = {"v": 1, "type": type_, "session": sid, "msg_id": n, "t": round(t, 6), **body}
            out.append((t, Incoming(topic, json.dumps(m).encode(), t)))

        put(topics.status, "status", t0, state="in_session")
        put(
            topics.session,
            "session_start",
            t0,
            patient=f"P-{seed:04d}",
            side="right",
            protocol="quad-sets",
            reps_prescribed=30,
            pain_before=4,
            device={"spec": "sim", "kind": "simulator", "rate_hz": 2000, "channels": ["VM", "VL"]},
            settings={
                "session": {"patient": f"P-{seed:04d}"},
                "target": {"low_pct": 30, "high_pct": 60},
                "protocol": {"hold_s": 3},
            },
        )
        for i in range(12_000):
            t = t0 + 0.05 + i / 10
            on = (i // 20) % 2 == 1
            vm = (45 + rng.gauss(0, 5)) if on else abs(rng.gauss(2, 1))
            vl = vm * (0.9 + rng.random() * 0.1)
            put(
                topics.live,
                "live",
                t,
                pct_mvc={"VM": round(vm, 2), "VL": round(vl, 2)},
                vm_vl_ratio=round(vm / vl, 3) if on else None,
                phase="work" if on else "rest",
                holding=on,
                reps=i // 400,
                index=i * 200,
                t_sample=round(t, 6),
                lsi=None,
                onset={"VM": on, "VL": on},
                vm_vl_onset_ms=12.0 if i > 40 else None,
            )
        for r in range(1, 31):
            t = t0 + r * 40
            for k, phase in enumerate(("countdown", "work", "rest")):
                put(
                    topics.cue,
                    "cue",
                    t + k,
                    kind="phase",
                    value=phase,
                    index=r * 8000 + k,
                    t_sample=t + k,
                )
            put(
                topics.event,
                "contraction",
                t + 1.5,
                number=r,
                channel="VM",
                onset_index=r * 8000,
                offset_index=r * 8000 + 6000,
                duration_s=3.0,
                peak_pct=55.0,
                mean_pct=44.0,
            )
            put(
                topics.event,
                "stim_burst",
                t + 2,
                command_id=r,
                amplitude_ma=20.0,
                pulse_width_us=300,
                frequency_hz=35.0,
                burst=r,
            )
            put(
                topics.rep,
                "rep",
                t + 4,
                period=r,
                achieved=True,
                rep=r,
                peak_pct_mvc=55.0,
                mean_pct_mvc=44.0,
                hold_s=3.1,
                time_in_band_s=3.4,
                time_to_band_s=0.4,
                vm_vl_ratio=1.05,
                onset_diff_ms=11.0,
                symmetry_pct=None,
            )
        put(
            topics.session,
            "session_end",
            t0 + 1199,
            pain_after=3,
            summary={"stopped_by": "end", "reps": 30, "duration_s": 1199.0},
        )
    return out


def messages(stations: int, start: float) -> list[Incoming]:
    every = [m for k in range(stations) for m in station_hour(f"st-{k:03d}", start, k + 1)]
    every.sort(key=lambda tm: tm[0])
    return [m for _, m in every]


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    import psycopg

    schema = "bench_storage_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in base else "?"
        try:
            yield f"{base}{sep}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def pg_bytes(db: Backend) -> int:
    rows = db.query(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'm')"
    )
    return int(rows[0][0])


def _largest(db: Backend) -> dict[str, int]:
    """PostgreSQL: bytes per table (its partitions, TOAST and indexes), the five largest."""
    rows = db.query(
        "SELECT coalesce(p.relname, c.relname), sum(pg_total_relation_size(c.oid)) AS b"
        " FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
        " LEFT JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
        " GROUP BY 1 ORDER BY b DESC LIMIT 5"
    )
    return {str(name): int(b) for name, b in rows}


def sqlite_bytes(db: Backend, path: str) -> int:
    db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(path)


def measure(
    url: str,
    path: str | None,
    fill: Callable[[str], dict[str, Any]],
    hours: float,
    upto: int | None = None,
) -> dict[str, Any]:
    if upto is None:
        ClinicStore(url).close()  # migrated, and its upkeep makes PostgreSQL's partitions
    db = connect(url)
    migrate(
        db, upto=upto
    )  # the empty schema's size: tables, indexes, PostgreSQL's empty partitions

    def size() -> int:
        return sqlite_bytes(db, path) if path else pg_bytes(db)

    empty = size()
    db.close()
    info = fill(url)
    db = connect(url)
    written = size()
    if path:
        db.execute("VACUUM")
    else:
        db.execute("VACUUM FULL")
    compact = size()
    tables = _largest(db) if path is None else {}
    db.close()
    return {
        **info,
        "largest_compacted_bytes": tables,
        "empty_schema_bytes": empty,
        "bytes_as_written": written,
        "bytes_compacted": compact,
        "per_station_hour_bytes_as_written": round((written - empty) / hours),
        "per_station_hour_bytes_compacted": round((compact - empty) / hours),
    }


def fill_after(items: list[Incoming]) -> Callable[[str], dict[str, Any]]:
    def fill(url: str) -> dict[str, Any]:
        store = ClinicStore(url)
        t = time.perf_counter()
        stored = 0
        for k in range(0, len(items), 500):
            result = store.ingest(items[k : k + 500])
            assert result.invalid == 0, result.reasons[:3]
            stored += result.stored
        took = time.perf_counter() - t
        (rows,) = store.db.query("SELECT count(*) FROM live_seconds")[0]
        store.close()
        return {"stored": stored, "live_rows": int(rows), "ingest_msg_per_s": round(stored / took)}

    return fill


def fill_before(after_url: str, items: list[Incoming]) -> Callable[[str], dict[str, Any]]:
    def fill(url: str) -> dict[str, Any]:
        src, db = connect(after_url), connect(url)
        assert migrate(db, upto=3) == []  # made empty by measure()
        live = []
        for item in items:
            b = json.loads(item.payload)
            if b["type"] == "live":
                live.append(
                    (
                        b["session"],
                        b["msg_id"],
                        b["t"],
                        b["phase"],
                        b["reps"],
                        b.get("vm_vl_ratio"),
                        b["index"],
                        json.dumps(b["pct_mvc"]),
                    )
                )
        with db.transaction():
            for table in COPIED:
                rows = src.query(f"SELECT * FROM {table}")
                for row in rows:
                    db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
            for k in range(0, len(live), 200):
                chunk = live[k : k + 200]
                marks = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                db.execute(
                    V3_LIVE.split(" VALUES")[0] + f" VALUES {marks}",
                    [v for row in chunk for v in row],
                )
        src.close()
        db.close()
        return {"live_rows": len(live)}

    return fill


def run(stations: int, pg: str | None) -> dict[str, Any]:
    hours = float(stations)  # each station one hour
    start = math.floor(time.time() / 86400) * 86400 + 3600.0  # within today's partition
    items = messages(stations, start)
    kinds: dict[str, int] = {}
    for item in items:
        k = json.loads(item.payload)["type"]
        kinds[k] = kinds.get(k, 0) + 1
    out: dict[str, Any] = {
        "what": __doc__.split("\n\n")[0] if __doc__ else "",
        "station_hours": hours,
        "messages": len(items),
        "messages_by_type": kinds,
    }
    with tempfile.TemporaryDirectory() as d:
        after_path, before_path = f"{d}/after.db", f"{d}/before.db"
        after = measure(after_path, after_path, fill_after(items), hours)
        before = measure(before_path, before_path, fill_before(after_path, items), hours, upto=3)
        out["sqlite"] = {"before_schema_3": before, "after_schema_4": after}
    if pg:
        with pg_schema(pg) as after_url, pg_schema(pg) as before_url:
            after = measure(after_url, None, fill_after(items), hours)
            before = measure(before_url, None, fill_before(after_url, items), hours, upto=3)
            out["postgresql"] = {"before_schema_3": before, "after_schema_4": after}
    for engine in ("sqlite", "postgresql"):
        if engine in out:
            b, a = out[engine]["before_schema_3"], out[engine]["after_schema_4"]
            out[engine]["ratio_compacted"] = round(
                b["per_station_hour_bytes_compacted"] / a["per_station_hour_bytes_compacted"], 1
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stations", type=int, default=2, help="station-hours (one hour each)")
    p.add_argument(
        "--pg",
        default=os.environ.get(
            "VMF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    p.add_argument("--no-pg", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "storage.json")
    args = p.parse_args()
    result = run(args.stations, None if args.no_pg else args.pg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
