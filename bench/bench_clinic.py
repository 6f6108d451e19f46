"""Clinic logging: logger ingest rate through Mosquitto into SQLite and PostgreSQL, and the
station outbox's cost per message.

Ingest: 100 simulated stations (100 aiomqtt clients in this process, each its own session)
publish N session messages each with QoS 1 while the logger is stopped, so the broker queues them
for the logger's persistent session; then the logger (`python -m feedback.clinic.logger`, its own
process and core) starts and drains them. The rate counts stored messages over the span of their
commit times, so interpreter start-up is left out; lost = published - stored, duplicated =
rows beyond one per (session, msg_id) plus quarantined copies (both must be 0).

Outbox: `publish()` + PUBACK removal per message for the SQLite WAL outbox against the in-memory
deque (`MemoryOutbox`) it replaced, in the same process.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench.stats import summary
from feedback.broker import free_port
from feedback.clinic.db import connect
from feedback.outputs.outbox import MemoryOutbox, Outbox, SqliteOutbox
from feedback.outputs.topics import MessageNumberer, Topics, encode

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("VMF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
STATIONS = 100


def _wait_port(port: int) -> None:
    import socket

    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"mosquitto did not listen on {port}")


def _station_message(numberer: MessageNumberer, i: int) -> tuple[str, dict[str, Any]]:
    if i % 4 == 3:
        return "rep", numberer.envelope(
            "rep",
            {"period": i // 4 + 1, "achieved": True, "rep": i // 4 + 1, "at_index": 1000 * i,
             "time_to_band_s": 0.8, "peak_pct_mvc": 48.2, "mean_pct_mvc": 35.1, "hold_s": 2.0,
             "time_in_band_s": 2.6, "vm_vl_ratio": 1.02, "onset_diff_ms": 28.5,
             "symmetry_pct": None},
        )  # fmt: skip
    body = {"kind": "zone", "value": "in_band", "index": 1000 * i, "t_sample": time.time()}
    return "cue", numberer.envelope("cue", body)


async def _publish_all(port: int, per_station: int) -> int:
    async def station(k: int) -> int:
        topics = Topics("bench", f"st-{k:03d}")
        numberer = MessageNumberer(f"S-bench-{k:03d}-{secrets.token_hex(2)}")
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-st-{k}") as c:
            for i in range(per_station):
                leaf, body = _station_message(numberer, i)
                await c.publish(f"{topics.base}/{leaf}", encode(body), qos=1)
        return per_station

    return sum(await asyncio.gather(*(station(k) for k in range(STATIONS))))


def _logger(port: int, db_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "feedback.clinic.logger", "--broker", f"mqtt://127.0.0.1:{port}",
         "--db", db_url, "--group", "bench", "--instance", "1"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _count(db_url: str, sql: str) -> int:
    try:
        db = connect(db_url)
    except Exception:
        return 0
    try:
        return int(db.query(sql)[0][0])
    except Exception:
        return 0
    finally:
        db.close()


async def _ingest(mosquitto: str, db_url: str, per_station: int, work: Path) -> dict[str, Any]:
    port = free_port()
    store = work / f"store-{port}"
    store.mkdir()
    store.chmod(0o777)  # Mosquitto started as root writes as its own user
    conf = work / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {store}/\nmax_queued_messages 1000000\n"
    )
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        logger = _logger(port, db_url)  # creates the schema and the persistent subscription
        while _count(db_url, "SELECT count(*) FROM schema_migrations") < 2:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        logger.terminate()
        logger.wait(10)
        t0 = time.perf_counter()
        published = await _publish_all(port, per_station)
        publish_s = time.perf_counter() - t0
        start = time.perf_counter()
        logger = _logger(port, db_url)
        done = 0
        while done < published and time.perf_counter() - start < 300:
            await asyncio.sleep(0.2)
            done = _count(db_url, "SELECT count(*) FROM messages")
        wall_s = time.perf_counter() - start
        await asyncio.sleep(0.5)
        logger.terminate()
        logger.wait(10)
    finally:
        broker.terminate()
        broker.wait(10)
    stored = _count(db_url, "SELECT count(*) FROM messages")
    distinct = _count(
        db_url, "SELECT count(*) FROM (SELECT DISTINCT session_id, msg_id FROM messages) d"
    )
    quarantined = _count(db_url, "SELECT count(*) FROM quarantine")
    span = _count(db_url, "SELECT CAST(1000 * (max(received_at) - min(received_at)) AS INTEGER)"
                  " FROM messages")  # fmt: skip
    return {
        "messages": published,
        "stored": stored,
        "lost": published - distinct,
        "duplicated": stored - distinct + quarantined,
        "ingest_msgs_per_s": round(stored / max(span / 1000, 1e-3)),
        "ingest_span_s": span / 1000,
        "wall_s_including_logger_start": round(wall_s, 2),
        "publish_msgs_per_s_100_stations": round(published / publish_s),
    }


def _outbox_costs(make: type[Outbox] | Any, n: int) -> dict[str, Any]:
    box: Outbox = make()
    payload = b'{"v":1,"type":"cue","session":"S-1","msg_id":1,"t":1.7e9,"kind":"zone"}' * 3
    append_us, ack_us = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        item = box.append("vmf/v1/c/s/cue", payload, False)
        t1 = time.perf_counter()
        box.ack(item)
        t2 = time.perf_counter()
        append_us.append((t1 - t0) * 1e6)
        ack_us.append((t2 - t1) * 1e6)
    box.close()
    return {"append_us": summary(append_us, "µs"), "ack_us": summary(ack_us, "µs")}


def outbox_overhead(n: int = 5000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        sqlite = _outbox_costs(lambda: SqliteOutbox(Path(d) / "o.sqlite3"), n)
        durable = _outbox_costs(lambda: SqliteOutbox(Path(d) / "f.sqlite3", durable=True), n // 5)
    memory = _outbox_costs(MemoryOutbox, n)

    def per_msg(r: dict[str, Any]) -> float:
        return float(r["append_us"]["p50"]) + float(r["ack_us"]["p50"])

    return {
        "what": f"{n} messages of ~220 bytes: append (before publish) + ack (after PUBACK)",
        "sqlite_wal_normal": sqlite,
        "sqlite_wal_full_fsync": durable,
        "peer_memory_deque": memory,
        "sqlite_us_per_message_p50": round(per_msg(sqlite), 1),
        "memory_us_per_message_p50": round(per_msg(memory), 2),
        "ratio_p50_sqlite_vs_memory": round(per_msg(sqlite) / max(per_msg(memory), 1e-3), 1),
    }


async def ingest(per_station: int) -> dict[str, Any]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        work.chmod(0o755)
        out["sqlite"] = await _ingest(mosquitto, str(work / "clinic.db"), per_station, work)
        schema = "bench_" + secrets.token_hex(4)
        try:
            admin = connect(PG_URL)
        except Exception as exc:
            out["postgresql"] = {"skipped": f"PostgreSQL not reachable at {PG_URL}: {exc}"}
            return out
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            out["postgresql"] = await _ingest(mosquitto, url, per_station, work)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()
    return out


def run(per_station: int = 200) -> dict[str, Any]:
    return {
        "what": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "stations": STATIONS,
        "messages_per_station": per_station,
        "ingest": asyncio.run(ingest(per_station)),
        "outbox": outbox_overhead(),
    }
