"""Remote dashboard figures (issue 5): the binary stream's size and its end-to-end latency.

One simulated station in real time publishes through a private Mosquitto on loopback; in the
same process (same clock) a `RemoteClient` feeds a `RemoteModel`, and a plain subscriber takes
the JSON `live` messages as the peer (the same latest-wins lane and broker, without curves).

- bytes per second per station on the `stream` topic (and on `live`, the peer);
- latency from the newest sample's arrival at the station (`t_sample`) to the packet applied in
  the remote model, p50/p99 (peer: `t_sample` of `live` to its receipt by the subscriber).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console

from bench.bench_clinic import _wait_port
from bench.stats import summary
from config.loader import load_settings
from feedback import app
from feedback.broker import free_port
from feedback.dashboard.remote import RemoteClient
from feedback.dashboard.remote_model import RemoteModel
from feedback.outputs.broker_access import BrokerAccess

CLINIC, STATION = "clinic-demo", "bench-remote"


async def _measure(port: int, seconds: float, work: Path) -> dict[str, Any]:
    access = BrokerAccess.from_url(f"mqtt://127.0.0.1:{port}")
    model = RemoteModel(CLINIC)
    stream_bytes = 0
    live_bytes, live_latency = 0, []
    feed = model.on_message

    def counting(topic: str, payload: bytes) -> None:
        nonlocal stream_bytes
        stream_bytes += len(payload) if topic.endswith("/stream") else 0
        feed(topic, payload)

    model.on_message = counting  # type: ignore[method-assign]
    client = RemoteClient(access, model, stations=[STATION], therapist_id="T-bench")
    remote = asyncio.create_task(client.run())
    await asyncio.wait_for(client.connected.wait(), 5)
    async with aiomqtt.Client("127.0.0.1", port) as peer:
        await peer.subscribe(f"vmf/v1/{CLINIC}/{STATION}/live")

        async def take_live() -> None:
            nonlocal live_bytes
            async for msg in peer.messages:
                assert isinstance(msg.payload, bytes)
                live_bytes += len(msg.payload)
                live_latency.append(time.time() - json.loads(msg.payload)["t_sample"])

        taker = asyncio.create_task(take_live())
        settings = load_settings(environ={}, overrides={"session.station": STATION})
        options = app.RunOptions(device="sim", duration_s=seconds, db=str(work / "s.db"),
                                 broker=f"mqtt://127.0.0.1:{port}", report=None,
                                 live_view=False)  # fmt: skip
        with open(os.devnull, "w") as devnull:
            await app.run(settings, options, console=Console(file=devnull))
        await asyncio.sleep(0.3)
        taker.cancel()
    remote.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await remote
    v = model.stations[STATION]
    stream = summary([x * 1000 for x in model.latency_s], "ms")
    live = summary([x * 1000 for x in live_latency], "ms")
    return {
        "session_s": seconds,
        "stream_bytes_per_s": round(stream_bytes / seconds, 1),
        "stream_packets": v.packets,
        "stream_packets_dropped": v.dropped,
        "stream_bytes_per_packet": round(stream_bytes / max(1, v.packets), 1),
        "peer_live_json_bytes_per_s": round(live_bytes / seconds, 1),
        "stream_latency_ms": stream,
        "peer_live_latency_ms": live,
        "latency_p50_ratio_stream_vs_live": round(float(stream["p50"]) / float(live["p50"]), 2),
    }


def run(seconds: float = 10.0) -> dict[str, Any]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            return asyncio.run(_measure(port, seconds, work))
        finally:
            broker.terminate()
            broker.wait(5)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
