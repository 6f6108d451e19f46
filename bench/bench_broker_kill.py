"""Messages lost or duplicated across broker kill -9 cycles (issue 11; goal: 0 and 0).

One station (MqttPublisher, SQLite outbox, MQTT 5, as `feedback.app` builds it) publishes a
session's messages at a steady rate through a real Mosquitto, configured as deploy/mosquitto
(persistent, autosave every 10 s), to the clinic logger (`python -m feedback.clinic.logger`, its
own process) writing to SQLite. Each cycle: the logger is killed -9, then the broker is killed
-9 and restarted on the same port and store, then the logger is started again; the station
publishes throughout. After the last cycle the station stops publishing and the run waits for
its outbox to drain. Counted from the clinic database:

- lost: msg_ids the station made that are not stored;
- duplicated: rows beyond one per msg_id (the ledger forbids them; counted anyway, in `events`);
- copies dropped: identical copies the logger received and dropped (the price of resending).

Two modes in the same run: `receipts` (delete on the logger's receipt) and the peer
`puback` (delete on the broker's PUBACK, as before issue 11), whose losses show what the
receipts prevent.

    python -m bench.bench_broker_kill --cycles 20          # writes bench/results/broker_kill.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.stats import summary
from feedback.broker import free_port
from feedback.clinic.db import connect
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import SqliteOutbox
from feedback.outputs.topics import MessageNumberer, Topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results")
RATE_HZ = 40.0  # session messages a second: a busy station (cues, events, reps)


class Broker:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        store = workdir / "mosquitto-store"
        store.mkdir()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {store}/\nautosave_interval 10\n"
            "max_queued_messages 100000\nmessage_size_limit 262144\n"
            f"user {getpass.getuser()}\n"
        )
        self.cmd = [binary, "-c", str(conf)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await _wait_port(self.port)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
            self.proc = None


class Logger:
    def __init__(self, broker_url: str, db: str) -> None:
        self.cmd = [
            sys.executable, "-m", "feedback.clinic.logger", "--broker", broker_url, "--db", db,
            "--group", "bench", "--instance", "1",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"mosquitto did not listen on {port}")


async def run_mode(
    mode: str, cycles: int, workdir: Path, seed: int, db: str | None = None
) -> dict[str, Any]:
    rng = random.Random(seed)
    workdir.mkdir()
    db = db or str(workdir / "clinic.sqlite3")
    broker = Broker(workdir)
    await broker.start()
    logger = Logger(broker.url, db)
    logger.start()
    topics = Topics("bench", "st-kill")
    session = f"S-kill-{mode}"
    numberer = MessageNumberer(session)
    outbox = SqliteOutbox(workdir / "outbox.sqlite3")
    publisher = MqttPublisher(
        broker.url, topics, client_id="st-kill", outbox=outbox, mqtt5=True,
        hold_without_subscriber=True, receipts=mode == "receipts",
    )  # fmt: skip
    runner = asyncio.create_task(publisher.run())
    made = 0
    stop_publishing = asyncio.Event()

    async def publish() -> None:
        nonlocal made
        while not stop_publishing.is_set():
            publisher.publish(
                topics.event, numberer.envelope("gap", {"from_index": made, "missing": 1})
            )
            made += 1
            await asyncio.sleep(1 / RATE_HZ)

    publishing = asyncio.create_task(publish())
    caught_up_s = []
    try:
        for _ in range(cycles):
            # The logger is (re)started: wait until the station has caught up with it, so that
            # each cycle starts with a logger that is subscribed and storing.
            t0 = time.monotonic()
            while publisher.backlog > 5 and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.05)
            caught_up_s.append(time.monotonic() - t0)
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # logger up
            logger.stop()  # kill -9: offline
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # the broker queues for it
            broker.kill9()
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            await broker.start()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            logger.start()
        stop_publishing.set()
        await publishing
        t0 = time.monotonic()
        drained = await publisher.flush(90.0)
        drain_s = time.monotonic() - t0
        await asyncio.sleep(3.0)  # the logger commits what it has
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        logger.stop(signal.SIGTERM)
        broker.kill9()
        outbox.close()
    store = connect(db)
    ids = [int(i) for (i,) in store.query(
        "SELECT msg_id FROM messages WHERE session_id = ?", (session,))]  # fmt: skip
    (rows, distinct) = store.query(
        "SELECT count(*), count(DISTINCT msg_id) FROM events WHERE session_id = ?", (session,)
    )[0]
    owners = store.query("SELECT duplicates FROM session_owners WHERE session_id = ?", (session,))
    (quarantined,) = store.query("SELECT count(*) FROM quarantine")[0]
    store.close()
    lost = sorted(set(range(1, made + 1)) - set(ids))
    return {
        "cycles": cycles,
        "made": made,
        "stored": len(set(ids)),
        "lost": len(lost),
        "lost_msg_ids_first_50": lost[:50],
        "duplicated": int(rows) - int(distinct),
        "copies_dropped_by_logger": int(owners[0][0]) if owners else 0,
        "quarantined": int(quarantined),
        "outbox_drained": drained,
        "outbox_left": publisher.backlog,
        "drain_after_last_cycle_s": round(drain_s, 2),
        "station": {
            "sent": publisher.stats.sent,
            "resent": publisher.stats.resent,
            "receipts": publisher.stats.receipts,
            "resend_requests": publisher.stats.resend_requests,
            "receipt_timeouts": publisher.stats.receipt_timeouts,
            "held_no_subscriber": publisher.stats.held_no_subscriber,
        },
        "station_caught_up_after_logger_restart": summary(caught_up_s, "s"),
    }


async def run(cycles: int, modes: list[str], seed: int, postgres: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rate_hz": RATE_HZ, "seed": seed, "database": "sqlite"}
    with tempfile.TemporaryDirectory(prefix="vmf-kill-") as tmp:
        for mode in modes:
            with _pg_schema(postgres) as db:
                out[mode] = await run_mode(mode, cycles, Path(tmp) / mode, seed, db)
            print(mode, json.dumps({k: out[mode][k] for k in ("made", "lost", "duplicated")}))
    if postgres:
        out["database"] = "postgresql"
    return out


@contextlib.contextmanager
def _pg_schema(url: str | None) -> Iterator[str | None]:
    """A fresh schema for one mode, first in the search path of the URL handed to the logger."""
    if not url:
        yield None
        return
    import psycopg

    schema = f"vmf_kill_{os.getpid()}_{random.randrange(10**6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_broker_kill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--mode", choices=["receipts", "puback"], action="append")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument(
        "--postgres", metavar="URL", help="log into PostgreSQL (e.g. postgresql://postgres@"
        "127.0.0.1:5432/test; a schema per mode, dropped after) instead of SQLite",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "broker_kill.json")
    args = p.parse_args()
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": "python -m bench.bench_broker_kill " + " ".join(sys.argv[1:]),
    }
    result = {
        **meta,
        **asyncio.run(
            run(args.cycles, args.mode or ["receipts", "puback"], args.seed, args.postgres)
        ),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
