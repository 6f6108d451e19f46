"""Steady load for the clinic logger's soak: simulated stations publishing session messages.

  python -m bench.soak_load PORT SECONDS STATIONS RATE_HZ

Each station sends RATE_HZ contract-valid session messages (cues, reps: QoS 1) and 10 live
snapshots (QoS 0) a second, on a fixed schedule, for SECONDS; then prints what it published as
JSON. Runs in its own process so the load does not share a core with the logger it measures.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time

import aiomqtt

from bench.bench_clinic import _station_message
from feedback.outputs.topics import MessageNumberer, Topics, encode

LIVE_HZ = 10.0


async def station(k: int, port: int, seconds: float, rate_hz: float) -> tuple[int, int]:
    topics = Topics("soak", f"st-{k:03d}")
    numberer = MessageNumberer(f"S-soak-{k:03d}-{secrets.token_hex(2)}")
    qos1 = qos0 = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"soak-st-{k}") as c:
        t0 = time.monotonic()
        next_msg = next_live = t0
        while (now := time.monotonic()) - t0 < seconds:
            if now >= next_msg:
                leaf, body = _station_message(numberer, qos1)
                await c.publish(f"{topics.base}/{leaf}", encode(body), qos=1)
                qos1 += 1
                next_msg += 1.0 / rate_hz
            if now >= next_live:
                live = numberer.live_envelope(
                    {"pct_mvc": {"VM": 42.0, "VL": 40.0}, "vm_vl_ratio": 1.05, "phase": "work",
                     "holding": True, "reps": qos1 // 4, "index": qos0 * 200, "t_sample": now,
                     "lsi": None, "onset": {"VM": True, "VL": True}, "vm_vl_onset_ms": 30.0}
                )  # fmt: skip
                await c.publish(topics.live, encode(live), qos=0)
                qos0 += 1
                next_live += 1.0 / LIVE_HZ
            await asyncio.sleep(max(0.0, min(next_msg, next_live) - time.monotonic()))
    return qos1, qos0


async def main(port: int, seconds: float, stations: int, rate_hz: float) -> dict[str, int]:
    counts = await asyncio.gather(*(station(k, port, seconds, rate_hz) for k in range(stations)))
    return {"qos1": sum(a for a, _ in counts), "qos0": sum(b for _, b in counts)}


if __name__ == "__main__":
    port, seconds, stations, rate = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(int(port), float(seconds), int(stations), float(rate)))))
