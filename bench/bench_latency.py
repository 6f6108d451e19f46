"""Cue latency: from the arrival of the sample that caused a cue to an MQTT subscriber.

A real-time simulated session publishes through the embedded broker; a subscriber in the same
process stamps each cue and live message on receipt. The peer is a bare aiomqtt publish →
subscribe round trip through the same broker, so the ratio shows what the station adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import aiomqtt
from rich.console import Console

from bench.stats import summary
from config import load_settings
from feedback import app
from feedback.broker import EmbeddedBroker


async def run(seconds: float) -> dict[str, Any]:
    settings = load_settings(environ={}, overrides={"session.station": "bench"})
    cue_ms: list[float] = []
    live_ms: list[float] = []
    peer_ms: list[float] = []
    async with EmbeddedBroker() as broker, aiomqtt.Client("127.0.0.1", broker.port) as sub:
        await sub.subscribe("vmf/v1/#", qos=1)
        await sub.subscribe("peer/#", qos=1)

        async def collect() -> None:
            async for msg in sub.messages:
                now = time.time()
                if msg.topic.matches("vmf/v1/+/+/stream"):
                    continue  # the binary stream for remote viewers: not JSON, not a cue
                body = json.loads(msg.payload)  # type: ignore[arg-type,unused-ignore]
                if msg.topic.matches("peer/#"):
                    peer_ms.append((now - body["t"]) * 1000)
                elif body.get("type") == "cue":
                    cue_ms.append((now - body["t_sample"]) * 1000)
                elif body.get("type") == "live":
                    live_ms.append((now - body["t_sample"]) * 1000)

        collector = asyncio.create_task(collect())
        with open(os.devnull, "w") as devnull:
            options = app.RunOptions(
                device="sim",
                duration_s=seconds,
                db=":memory:",
                broker=broker.url,
                report=None,
                live_view=False,
            )
            report = await app.run(settings, options, console=Console(file=devnull))
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            for _ in range(300):
                await pub.publish("peer/x", json.dumps({"t": time.time()}), qos=1)
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        if collector.done():  # it died: say why rather than report empty figures
            collector.result()
        collector.cancel()
    cue, peer = summary(cue_ms, "ms"), summary(peer_ms, "ms")
    return {
        "what": f"{seconds:.0f} s real-time simulated session, embedded amqtt broker, "
        "subscriber in-process; latency = receipt time - arrival time of the causing sample",
        "cue_latency_ms": cue,
        "live_latency_ms": summary(live_ms, "ms"),
        "peer_bare_publish_ms": peer,
        "ratio_p50_cue_vs_peer": round(float(cue["p50"]) / float(peer["p50"]), 2),
        "envelope_group_delay_ms": report["envelope_group_delay_ms"],
        "note": "the envelope delay (group delay) comes on top: it is the signal's own lag",
        "block_compute_us_p50": report["block_compute_us_p50"],
        "block_compute_us_p99": report["block_compute_us_p99"],
    }
