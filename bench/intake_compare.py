"""aiomqtt against paho as the logger's intake (issue 13): the same 34,300 messages (100
stations × 30 s of the real mix, all QoS 1) queued by a private Mosquitto for a persistent
shared-subscription session, then drained with manual acks and nothing stored. `paho+sqlite`
also stores each batch (feedback.clinic.intake + ClinicStore, without the logger's asyncio).

  python -m bench.intake_compare aiomqtt|paho|paho+sqlite
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.loadtest import Broker, Publishers, make_stations
from feedback.clinic.intake import PahoIntake
from feedback.clinic.store import ClinicStore, Incoming
from feedback.outputs.broker_access import BrokerAccess

TOPICS = [f"$share/g/vmf/v1/+/+/{leaf}" for leaf in ("status", "session", "cue", "rep", "live")]


def fill(port: int) -> int:
    stations = make_stations(100)
    pub = Publishers(port, stations)
    for k, s in enumerate(stations):
        pub.publish(k, s.start())
    for _ in range(300):
        for k, s in enumerate(stations):
            pub.publish(k, [m for m in s.step(10, b"", 1) if not m[0].endswith("/stream")])
    for k, s in enumerate(stations):
        pub.publish(k, s.end())
    pub.flush(60)
    pub.close()
    return sum(s.logged for s in stations)


def paho(port: int, workdir: Path, store: bool) -> tuple[int, float]:
    access = BrokerAccess.from_url(f"mqtt://127.0.0.1:{port}")
    ready = threading.Event()
    intake = PahoIntake(access, "x", TOPICS, on_ready=ready.set)
    intake.start()
    ready.wait(5)
    intake.stop()
    total = fill(port)
    db = ClinicStore(str(workdir / "c.db")) if store else None
    intake = PahoIntake(access, "x", TOPICS)
    intake.start()
    got, first, t0 = 0, 0, 0.0
    while got < total:
        batch = intake.take(500, 5)
        if not batch:
            break
        if not t0:
            t0, first = time.perf_counter(), len(batch)  # timed from the first batch on
        if db is not None:
            db.ingest([Incoming(m.topic, m.payload, time.time()) for m in batch])
        intake.ack(batch)
        got += len(batch)
    n = got - first
    rate = n / (time.perf_counter() - t0)
    intake.stop()
    return total, rate


async def aio(port: int) -> tuple[int, float]:
    def client() -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval, props.ReceiveMaximum = 3600, 2000
        return aiomqtt.Client("127.0.0.1", port, identifier="x", clean_start=False,
                              protocol=aiomqtt.ProtocolVersion.V5, properties=props)  # fmt: skip

    async with client() as c:
        await c.subscribe([(t, 1) for t in TOPICS])
    total = fill(port)
    c = client()
    c._client.manual_ack_set(True)
    n, t0 = 0, 0.0
    async with c:
        async for m in c.messages:
            if n == 0:
                t0 = time.perf_counter()
            c._client.ack(m.mid, m.qos)
            n += 1
            if n == total:
                break
    return total, (n - 1) / (time.perf_counter() - t0)


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) > 1 else "paho"
    workdir = Path(tempfile.mkdtemp(prefix="vmf-intake-"))
    broker = Broker(workdir)
    try:
        if kind == "aiomqtt":
            total, rate = asyncio.run(aio(broker.port))
        else:
            total, rate = paho(broker.port, workdir, store=kind == "paho+sqlite")
    finally:
        broker.stop()
    print(f"{kind}: {total} messages, {rate:,.0f} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
