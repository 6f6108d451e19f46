"""Cue latency: from the arrival of the sample that caused a cue to an MQTT subscriber.

A real-time simulated session publishes through a real Mosquitto (configured as deploy/ runs
it: `set_tcp_nodelay true`); a subscriber in a process of its own (as the clinic's would be,
and so that its reads do not wait for the station's event loop) stamps each cue and live
message on receipt with the same wall clock. The peer, in the same run and through the same
broker, is a bare aiomqtt QoS 1 publish → subscribe round trip, so the ratio shows what the
station adds. Without a Mosquitto binary the embedded broker stands in, and the result says so.

A second subscriber (bench/socket_subscriber.py) takes the same messages and stamps them as
their bytes come off its socket, before any parsing (`at_socket` in the result): aiomqtt's
receive path adds ~0.4 ms at the median on this project's machine, to the peer's messages as
much as to the station's, and the station is not the tablet's MQTT stack.

    python -m bench.bench_latency --seconds 20 [--split-cores]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.cue_stages import CueStages
from bench.stats import summary
from bench.wake_penalty import wake_penalty
from config.loader import load_settings
from config.settings import Settings
from feedback import app
from feedback.broker import EmbeddedBroker, free_port
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.pipeline import compile_kernels

GOAL_MS = {"p50": 1.0, "p99": 3.0}
# One-second work and rest periods: about four times the demo protocol's cues a second, so a
# run of a few minutes holds enough cues for its p99 to be more than its largest value. A cue
# block does the same work whichever protocol timed it; 200 reps outlast a 400 s run.
CUE_RICH = {"protocol.work_s": 1.0, "protocol.rest_s": 1.0, "protocol.hold_s": 0.5,
            "protocol.reps": 200}  # fmt: skip


@contextlib.asynccontextmanager
async def mosquitto(
    workdir: Path, cpus: set[int] | None = None
) -> AsyncIterator[tuple[str, int, str]]:
    """(url, port, what) of a private Mosquitto, or of the embedded broker without one."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        async with EmbeddedBroker() as broker:
            yield broker.url, broker.port, "embedded amqtt broker (no mosquitto binary)"
        return
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    _pin(proc.pid, cpus)
    try:
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        version = subprocess.run([binary, "-h"], capture_output=True, text=True).stdout
        yield f"mqtt://127.0.0.1:{port}", port, (version.splitlines() or ["mosquitto"])[0]
    finally:
        proc.terminate()
        proc.wait(5)


# The subscriber: one line per message, "<receipt time> <topic> <payload>", until killed;
# it makes the file named by its second argument once subscribed.
SUBSCRIBER = """
import asyncio, sys, time, aiomqtt
async def main():
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1])) as sub:
        await sub.subscribe("vmf/v1/#", qos=1)
        await sub.subscribe("peer/#", qos=1)
        open(sys.argv[2], "w").close()  # subscribed: the run may begin
        async for msg in sub.messages:
            now = time.time()
            if msg.topic.matches("vmf/v1/+/+/stream"):
                continue
            print(now, msg.topic.value, msg.payload.decode(), flush=True)
asyncio.run(main())
"""


# The same subscriptions stamped as their bytes come off the socket (see that module).
SOCKET_SUBSCRIBER = str(Path(__file__).with_name("socket_subscriber.py"))


# The bare peer: a QoS 1 publish every 10 ms, each stamped with its send time, for `seconds`.
PEER = """
import asyncio, json, sys, time, aiomqtt
async def main():
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1])) as pub:
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:
            await pub.publish("peer/x", json.dumps({"t": time.time()}), qos=1)
            await asyncio.sleep(0.01)
asyncio.run(main())
"""


async def _wait_ready(flag: Path, sub: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if flag.exists():
            return
        if sub.returncode is not None:
            raise RuntimeError(f"the subscriber exited ({sub.returncode}) before subscribing")
        await asyncio.sleep(0.05)
    raise TimeoutError("the subscriber did not subscribe within 10 s")


def _split_cores(enabled: bool) -> tuple[set[int] | None, str]:
    """With `enabled` and two or more CPUs: the station on the first, everything else (broker,
    subscriber, peer) on the rest, as when the station is a machine of its own and the tablet
    another; else everyone shares every CPU, as on a one-box demo."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None, f"shared: all processes on CPUs {cpus}"
    os.sched_setaffinity(0, {cpus[0]})
    others = set(cpus[1:])
    return (
        others,
        f"split: station on CPU {cpus[0]}, broker, subscriber and peer on {sorted(others)}",
    )


def _pin(pid: int, cpus: set[int] | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(pid, cpus)


async def run(seconds: float, split_cores: bool = False) -> dict[str, Any]:
    settings = load_settings(environ={}, overrides={"session.station": "bench", **CUE_RICH})
    # The station's share: from the sample's arrival to the cue handed to the connection
    # (`publish` returns once the socket has it), stamped in-process with the same clock.
    in_station_ms: list[float] = []
    publish = MqttPublisher.publish

    def timed(self: MqttPublisher, topic: str, message: dict[str, Any], **kw: Any) -> None:
        publish(self, topic, message, **kw)
        if message.get("type") == "cue":
            in_station_ms.append((time.time() - message["t_sample"]) * 1000)

    MqttPublisher.publish = timed  # type: ignore[method-assign]
    stages = CueStages()
    stages.install()
    try:
        # The kernels load first (on a cold numba cache they compile: 15-20 s and a dozen full
        # collections), before the peer starts, so that its window is the session's; the
        # station's own warm-up then finds them loaded (it runs once per process).
        t0 = time.perf_counter()
        compile_kernels(settings)
        kernels_s = time.perf_counter() - t0
        others, placement = _split_cores(split_cores)
        result = await _run(settings, seconds, in_station_ms, others)
        result["placement"] = placement
    finally:
        stages.remove()
        MqttPublisher.publish = publish  # type: ignore[method-assign]
    result["kernels_load_s"] = round(kernels_s, 2)
    # The machine's own figure, to read the run's against (bench/wake_penalty.py).
    result["machine_wake_penalty"] = wake_penalty(100)
    result["cue_stages_us"] = stages.report()
    return result


async def _run(
    settings: Settings, seconds: float, in_station_ms: list[float], others: set[int] | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with mosquitto(Path(tmp), others) as (url, port, broker_name):
            # The subscribers write their lines to files, read after the run: reading a pipe
            # here would wake the station's own event loop at every message it receives.
            subs: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
            for name, script in (("aiomqtt", ["-c", SUBSCRIBER]), ("socket", [SOCKET_SUBSCRIBER])):
                received = Path(tmp) / f"received-{name}.txt"
                with received.open("wb") as out:
                    ready = received.with_suffix(".ready")
                    sub = await asyncio.create_subprocess_exec(
                        sys.executable, *script, str(port), str(ready), stdout=out
                    )
                    _pin(sub.pid, others)
                await _wait_ready(ready, sub)
                subs[name] = (sub, received)
            # The peer publishes from a process of its own while the session runs: it meets the
            # same machine (load, broker, subscriber) at the same time.
            peer_proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PEER, str(port), str(seconds)
            )
            _pin(peer_proc.pid, others)
            with open(os.devnull, "w") as devnull:
                options = app.RunOptions(
                    device="sim",
                    duration_s=seconds,
                    db=str(Path(tmp) / "session.sqlite3"),
                    broker=url,
                    report=None,
                    live_view=False,
                )
                report = await app.run(settings, options, console=Console(file=devnull))
            await peer_proc.wait()
            await asyncio.sleep(0.5)
            for sub, _ in subs.values():
                sub.terminate()
                await sub.wait()
            got = {name: _latencies(received.read_text()) for name, (_, received) in subs.items()}
    aio, sock = got["aiomqtt"], got["socket"]
    cue, peer = summary(aio["cue"], "ms"), summary(aio["peer"], "ms")
    sock_cue, sock_peer = summary(sock["cue"], "ms"), summary(sock["peer"], "ms")
    return {
        "what": f"{seconds:.0f} s real-time simulated session (1 s work and rest periods) "
        f"through {broker_name}, "
        "subscriber in its own process; latency = receipt time - arrival time of the causing "
        "sample; "
        "peer = bare aiomqtt QoS 1 publish every 10 ms to the same subscriber through the same "
        "broker, from its own process, while the session runs",
        "cue_latency_ms": cue,
        "cue_in_station_ms": summary(in_station_ms, "ms"),
        "live_latency_ms": summary(aio["live"], "ms"),
        "peer_bare_publish_ms": peer,
        "ratio_p50_cue_vs_peer": _ratio(cue, peer, "p50"),
        "ratio_p99_cue_vs_peer": _ratio(cue, peer, "p99"),
        "at_socket": {
            "what": "the same messages stamped by a second subscriber as their bytes come off "
            "its socket (bench/socket_subscriber.py), before any parsing: without aiomqtt's "
            "receive path",
            "cue_latency_ms": sock_cue,
            "live_latency_ms": summary(sock["live"], "ms"),
            "peer_bare_publish_ms": sock_peer,
            "ratio_p50_cue_vs_peer": _ratio(sock_cue, sock_peer, "p50"),
            "ratio_p99_cue_vs_peer": _ratio(sock_cue, sock_peer, "p99"),
        },
        "goal_ms": GOAL_MS,
        "envelope_group_delay_ms": report["envelope_group_delay_ms"],
        "note": "the envelope delay (group delay) comes on top: it is the signal's own lag",
        "block_compute_us_p50": report["block_compute_us_p50"],
        "block_compute_us_p99": report["block_compute_us_p99"],
    }


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    return round(float(a[key]) / float(b[key]), 2)


def _latencies(text: str) -> dict[str, list[float]]:
    """Per kind (cue, live, peer): receipt time - the causing sample's arrival (the peer's
    send), in ms, from a subscriber's lines."""
    out: dict[str, list[float]] = {"cue": [], "peer": [], "live": []}
    for line in text.splitlines():
        now, topic, payload = [*line.split(" ", 2), ""][:3]
        if not payload.startswith("{"):
            continue  # e.g. a retained message cleared (empty payload)
        body = json.loads(payload)
        if topic.startswith("peer/"):
            out["peer"].append((float(now) - body["t"]) * 1000)
        elif body.get("type") in ("cue", "live"):
            out[body["type"]].append((float(now) - body["t_sample"]) * 1000)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_latency")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument(
        "--split-cores",
        action="store_true",
        help="the station on one CPU, broker, subscriber and peer on the others",
    )
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.seconds, args.split_cores)), indent=2))


if __name__ == "__main__":
    main()
