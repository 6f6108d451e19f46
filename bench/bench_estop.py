"""Emergency-stop acknowledgement while the command topic is flooded (issue 11).

A station in real time (simulator with its emulated firmware, stimulation enabled, session log,
MQTT publisher and command gate, as `feedback.app` wires them) runs against a private Mosquitto
on loopback. A separate process floods the station's `.../cmd` with about 1,000 malformed or
unauthorised commands a second (nested JSON, random bytes, mutated commands, oversized payloads,
strangers, stale and foreign-session commands). In the station's process (same clock) a
therapist sends an emergency stop every 50 ms, alternating between its own topic
(`.../cmd/estop`) and, as the peer, the ordinary command topic.

- `estop_ack_ms`: therapist publish → the station's `command_ack` for that very command
  (`command_msg_id`, topic `ack`, sent back on the stop's own connection), stops on
  `.../cmd/estop`;
- `peer_cmd_topic_ack_ms`: publish → the accepted `command_result` event for a stop sent on
  `.../cmd` (behind the flood; the only answer that lane has);
- `estop_logged_event_ms`: the `command_result` event of the stops on `.../cmd/estop`;
- `estop_latched_ms` / `peer_cmd_topic_latched_ms`: publish → the station's stimulation latched;
- `flood_received_per_s`: what the station's command listener took from the flood.

    python -m bench.bench_estop [--seconds 20] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench.bench_clinic import _wait_port
from bench.stats import summary
from config.loader import load_settings
from config.settings import Settings
from devices.simulator import SimulatedDevice
from feedback.broker import free_port
from feedback.control.bus import CommandBus
from feedback.control.commands import EmergencyStop
from feedback.control.gate import CommandGate, make_command
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.session_store import SessionStore
from feedback.outputs.topics import Topics
from feedback.station import compose

CLINIC, STATION, THERAPIST = "clinic-demo", "bench-estop", "T-01"
STRANGER = "ZZZZ-9999"  # never on the list: no mutation of its commands can be obeyed


def flood_payloads(rng: random.Random, session: str = "S20260101-000000-000000") -> bytes:
    """One malformed or unauthorised command: what a hostile or broken peer might send."""
    base = make_command("stop", issuer=STRANGER, session=session, msg_id=rng.randint(1, 2**40))
    kind = rng.randrange(9)
    if kind == 0:
        depth = rng.choice((40, 1000, 5000))
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == 1:
        return rng.randbytes(rng.randrange(0, 2000))
    if kind == 2:  # a valid-looking command with a few bytes changed
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 3:
        return b'{"type": "command", "pad": "' + b"x" * 70_000 + b'"}'
    if kind == 4:
        return json.dumps({"type": "command", "action": ["stop"] * 50, "msg_id": "9e15"}).encode()
    if kind == 5:  # stale, from the real therapist: refused by the freshness check
        return make_command("stop", issuer=THERAPIST, session=session, msg_id=9 * 10**15, t=1.7e9)
    if kind == 6:  # fresh, from the real therapist, for a session that is not running
        return make_command("stop", issuer=THERAPIST, session="S20000101-000000-ffffff",
                            msg_id=9 * 10**15)  # fmt: skip
    if kind == 7:
        return make_command("emergency_stop", issuer=STRANGER, session=None)
    return base


async def flood(port: int, topic: str, rate: float, seconds: float, seed: int = 1) -> int:
    """Publish `rate` flood messages a second for `seconds`; returns how many were sent."""
    rng = random.Random(seed)
    sent = 0
    access = BrokerAccess.from_url(f"mqtt://127.0.0.1:{port}")
    async with aiomqtt.Client(**access.client_kwargs(), identifier=f"flood-{seed}") as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (elapsed := loop.time() - start) < seconds:
            due = int(elapsed * rate) + 1
            await asyncio.gather(
                *(client.publish(topic, flood_payloads(rng), qos=1) for _ in range(due - sent))
            )
            sent = due
            await asyncio.sleep(0.005)
    return sent


def station_settings() -> Settings:
    return load_settings(
        environ={},
        overrides={
            "session.clinic": CLINIC,
            "session.station": STATION,
            "mqtt.therapists": [THERAPIST],
            "stimulation.enabled": True,
            "stimulation.min_rest_s": 1.0,
            "stim_burst.ramp_up_s": 0.2,
            "stim_burst.hold_s": 1.0,
            "stim_burst.ramp_down_s": 0.2,
            "protocol.reps": 100,
        },
    )


class FloodedStation:
    """The station part of the measurement, also used by tests/stimulation/test_estop_flood.py."""

    def __init__(self, port: int, work: Path, settings: Settings | None = None) -> None:
        self.settings = s = settings or station_settings()
        self.topics = Topics(s.session.clinic, s.session.station)
        self.device = SimulatedDevice(s.simulator, block_ms=10.0)
        self.store = SessionStore(work / "station.db")
        bus = CommandBus()
        self.publisher = MqttPublisher(f"mqtt://127.0.0.1:{port}", self.topics,
                                       client_id=s.session.station)  # fmt: skip
        self.session = compose(s, self.device, self.publisher, self.store, duration_s=None,
                               commands=bus)  # fmt: skip
        self.gate = CommandGate(self.topics, s.mqtt.therapists, bus,
                                current_session=lambda: self.session.session_id,
                                on_verdict=self.session.record_command)  # fmt: skip
        self.publisher.on_command = self.gate.handle
        self.publisher.on_estop = self.gate.answer_estop
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> FloodedStation:
        await self.device.__aenter__()
        self._tasks = [
            asyncio.create_task(self.publisher.run()),
            asyncio.create_task(self.store.run()),
        ]
        self.run = asyncio.create_task(self.session.run(self.stop))
        while not (self.publisher.connected and self.publisher.estop_connected):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # subscriptions in place
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.run, 10)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.device.__aexit__(None, None, None)
        self.store.close()


async def _measure(port: int, seconds: float, rate: float, work: Path) -> dict[str, Any]:
    acks: dict[int, float] = {}  # command msg_id → when its accepted command_ack arrived
    logged: dict[int, float] = {}  # command msg_id → when its accepted command_result arrived
    obeyed: dict[int, float] = {}  # command msg_id → when the station had latched (same clock)
    sent: dict[int, tuple[str, float]] = {}  # command msg_id → (lane, when sent)
    access = BrokerAccess.from_url(f"mqtt://127.0.0.1:{port}")  # TCP_NODELAY, as every client
    async with (
        FloodedStation(port, work) as st,
        aiomqtt.Client(**access.client_kwargs()) as therapist,
    ):
        await therapist.subscribe(st.topics.event, qos=1)
        # after the session's own handler, which latches: so this is "latched" time
        await therapist.subscribe(st.topics.ack, qos=1)

        def latched(command: EmergencyStop) -> None:
            obeyed.setdefault(command.msg_id or 0, time.perf_counter())

        st.gate.bus.on(EmergencyStop, latched)

        async def take_acks() -> None:
            async for msg in therapist.messages:
                body = json.loads(msg.payload)
                if not body.get("accepted"):
                    continue
                if body.get("type") == "command_ack":
                    acks.setdefault(body["command_msg_id"], time.perf_counter())
                elif body.get("type") == "command_result":
                    logged.setdefault(body["command_msg_id"], time.perf_counter())

        reader = asyncio.create_task(take_acks())
        flooder = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_estop", "--flood", str(port), st.topics.cmd,
             str(rate), str(seconds)], stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # the flood is on
        received0, t0 = st.publisher.stats.commands_received, time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < seconds - 2.0:
            lane = "estop" if n % 2 == 0 else "cmd"
            cmd = make_command("emergency_stop", issuer=THERAPIST, session=None,
                               reason="bench")  # fmt: skip
            msg_id = json.loads(cmd)["msg_id"]
            sent[msg_id] = (lane, time.perf_counter())
            await therapist.publish(st.topics.estop if lane == "estop" else st.topics.cmd, cmd,
                                    qos=1)  # fmt: skip
            n += 1
            await asyncio.sleep(0.05)
        flood_rate = (st.publisher.stats.commands_received - received0) / (time.perf_counter() - t0)
        await asyncio.sleep(1.0)
        reader.cancel()
        out, _ = await asyncio.to_thread(flooder.communicate)
        fw_latched = st.device.firmware.estop_latched
        gate = {"accepted": st.gate.accepted, "refused": st.gate.refused,
                "errors": st.gate.errors, "unreported": st.gate.unreported}  # fmt: skip
        handler_errors = st.publisher.stats.handler_errors
    ms: dict[str, dict[str, list[float]]] = {
        k: {"estop": [], "cmd": []} for k in ("ack", "logged", "latched")
    }
    lost = {"estop": 0, "cmd": 0}
    for msg_id, (lane, t_sent) in sent.items():
        for kind, seen in (("ack", acks), ("logged", logged), ("latched", obeyed)):
            if msg_id in seen:
                ms[kind][lane].append((seen[msg_id] - t_sent) * 1000)
        # the answer a therapist waits for: the ack on the stop's lane, the event on the other
        if msg_id not in (acks if lane == "estop" else logged):
            lost[lane] += 1
    estop, peer = summary(ms["ack"]["estop"], "ms"), summary(ms["logged"]["cmd"], "ms")
    return {
        "seconds": seconds,
        "flood_rate_asked_per_s": rate,
        "flood_sent": int(out.strip() or 0),
        "flood_received_per_s": round(flood_rate, 1),
        "estop_ack_ms": estop,
        "peer_cmd_topic_ack_ms": peer,
        "estop_logged_event_ms": summary(ms["logged"]["estop"], "ms"),
        "estop_latched_ms": summary(ms["latched"]["estop"], "ms"),
        "peer_cmd_topic_latched_ms": summary(ms["latched"]["cmd"], "ms"),
        "estops_without_ack": lost,
        "p99_ratio_estop_vs_cmd_topic": round(float(estop["p99"]) / float(peer["p99"]), 2),
        "goal_p99_ms": 20.0,
        "firmware_latched": fw_latched,
        "gate": gate,
        "handler_errors": handler_errors,
    }


def run(seconds: float = 20.0, rate: float = 1000.0) -> dict[str, Any]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        "max_inflight_messages 0\nmax_queued_messages 100000\n"
                        "set_tcp_nodelay true\n")  # fmt: skip
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            return asyncio.run(_measure(port, seconds, rate, work))
        finally:
            broker.terminate()
            broker.wait(5)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_estop")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=1000.0, help="flood messages per second")
    p.add_argument("--flood", nargs=4, metavar=("PORT", "TOPIC", "RATE", "SECONDS"),
                   help=argparse.SUPPRESS)  # fmt: skip
    args = p.parse_args()
    if args.flood:
        port, topic, rate, seconds = args.flood
        print(asyncio.run(flood(int(port), topic, float(rate), float(seconds))))
        return
    result = run(args.seconds, args.rate)
    results = Path(__file__).with_name("results")
    results.mkdir(exist_ok=True)
    (results / "estop.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
