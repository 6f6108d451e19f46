"""A cue's last stage in the station: `MqttPublisher.publish` until the socket has the packet.

The same publisher, the same connection to a real Mosquitto (set_tcp_nodelay true, as in
deploy/) and the same SQLite outbox, in one process: rounds of cues written by paho_direct
alternate with rounds written by paho's own send path (`publish`, `loop_write`, and taking
away the write watch aiomqtt then adds), so both meet the same load. The peer is paho's path;
the ratio is direct / paho.

    python -m bench.bench_cue_write --cues 4000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_latency import mosquitto
from bench.stats import summary
from feedback.outputs import paho_direct
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import SqliteOutbox
from feedback.outputs.topics import MessageNumberer, Topics

ROUND = 50  # cues per round; the paths alternate round by round


def cue(numberer: MessageNumberer, i: int) -> dict[str, Any]:
    """A cue message of the size the station sends."""
    body = {
        "kind": "work",
        "value": None,
        "index": i,
        "t_sample": round(time.time(), 6),
        "phase": "work",
        "phase_left_s": 4.99,
        "reps_done": i % 10,
        "reps_total": 10,
        "band": [40.0, 60.0],
    }
    return numberer.envelope("cue", body)


async def run(cues: int) -> dict[str, Any]:
    topics = Topics("bench", "cue-write")
    numberer = MessageNumberer("S-bench")
    times: dict[bool, list[float]] = {True: [], False: []}
    pinned = paho_direct.DIRECT
    assert pinned, f"paho {paho_direct.PAHO} is not the one installed: no direct path to time"
    with tempfile.TemporaryDirectory() as tmp:
        async with mosquitto(Path(tmp)) as (url, _, broker_name):
            outbox = SqliteOutbox(Path(tmp) / "outbox.sqlite3")
            publisher = MqttPublisher(url, topics, client_id="bench-cue-write", outbox=outbox)
            task = asyncio.create_task(publisher.run())
            while not publisher.connected:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the drain task has the connection
            try:
                for i in range(cues):
                    direct = (i // ROUND) % 2 == 0
                    paho_direct.DIRECT = direct
                    message = cue(numberer, i)
                    t0 = time.perf_counter()
                    publisher.publish(topics.cue, message)
                    times[direct].append((time.perf_counter() - t0) * 1e6)
                    # A cue's pace, about; PUBACKs and the outbox's writer come in between.
                    await asyncio.sleep(0.002)
                assert await publisher.flush(10)
            finally:
                paho_direct.DIRECT = pinned
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                outbox.close()
    fast, peer = summary(times[True], "us"), summary(times[False], "us")
    return {
        "what": f"MqttPublisher.publish of a cue until the socket has it, through {broker_name} "
        f"with a SQLite outbox; rounds of {ROUND} alternate between paho_direct and paho's own "
        "send path (the peer) on the same connection",
        "direct_us": fast,
        "peer_paho_send_path_us": peer,
        "ratio_p50_direct_vs_peer": round(float(fast["p50"]) / float(peer["p50"]), 2),
        "ratio_p99_direct_vs_peer": round(float(fast["p99"]) / float(peer["p99"]), 2),
        "published": publisher.stats.published,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_cue_write")
    p.add_argument("--cues", type=int, default=4000)
    print(json.dumps(asyncio.run(run(p.parse_args().cues)), indent=2))


if __name__ == "__main__":
    main()
