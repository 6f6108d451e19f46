"""The emergency stop while the station's command topics are flooded (issue 11): a real Mosquitto,
a whole station (simulator with its emulated firmware, stimulation on, session log, publisher,
command gate; `bench.bench_estop.FloodedStation`), 1,000 malformed or unauthorised commands a
second on `.../cmd` and garbage on `.../cmd/estop` too. The stop is answered, the firmware
latches, the burst ends, and the session goes on. Speed is not asserted here (bench_estop)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bench.bench_estop import FloodedStation, flood, station_settings
from config.loader import load_settings
from feedback.control.gate import make_command
from feedback.outputs.broker_access import BrokerAccess
from tests.conftest import MosquittoProcess, missing_service, mosquitto_binary


@pytest.fixture
def deep_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """Mosquitto that queues the whole flood for a station that falls behind (by default it
    drops QoS 1 messages beyond 1,000 queued: a loss at the broker, not at the station)."""
    binary = mosquitto_binary()
    if binary is None:
        missing_service("mosquitto is not installed: apt-get install -y mosquitto")
    assert binary is not None
    broker = MosquittoProcess(binary, tmp_path, "max_queued_messages 1000000\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)


def quick_settings() -> Any:
    base = station_settings()
    fast = {
        "simulator.first_rest_s": 0.2,
        "protocol.ready_s": 0.1,
        "protocol.work_s": 3.0,
        "protocol.hold_s": 1.0,
        "protocol.rest_s": 0.5,
        "stim_burst.hold_s": 3.0,
    }
    return load_settings(environ={}, overrides={**_flat(base), **fast})


def _flat(settings: Any) -> dict[str, Any]:
    wanted = ("session.clinic", "session.station", "mqtt.therapists", "stimulation.enabled",
              "stimulation.min_rest_s", "stim_burst.ramp_up_s", "stim_burst.ramp_down_s",
              "protocol.reps")  # fmt: skip
    out = {}
    for key in wanted:
        section, name = key.split(".")
        out[key] = getattr(getattr(settings, section), name)
    return out


async def test_the_stop_is_answered_and_stimulation_ends_under_a_flood(
    deep_broker: MosquittoProcess, tmp_path: Path
) -> None:
    mosquitto = deep_broker
    answers: list[dict[str, Any]] = []
    access = BrokerAccess.from_url(mosquitto.url)
    async with (
        FloodedStation(mosquitto.port, tmp_path, quick_settings()) as st,
        aiomqtt.Client(**access.client_kwargs()) as therapist,
    ):
        fw = st.device.firmware
        await therapist.subscribe(st.topics.ack, qos=1)

        async def read() -> None:
            async for msg in therapist.messages:
                answers.append(json.loads(msg.payload))  # type: ignore[arg-type]

        reader = asyncio.create_task(read())
        floods = [
            asyncio.create_task(flood(mosquitto.port, st.topics.cmd, 1000.0, 6.0, seed=1)),
            asyncio.create_task(flood(mosquitto.port, st.topics.estop, 100.0, 6.0, seed=2)),
        ]
        stats = st.publisher.stats
        # Preconditions, not the guarantee: on a loaded 2-core machine the flooders and the station
        # start slowly, so these wait longer than the stop's own answer below.
        await wait_until(lambda: stats.commands_received > 300, "the flood does not arrive", 30.0)
        await wait_until(lambda: fw.stim_state.stimulating, "no burst started", 30.0)
        estop = make_command("emergency_stop", issuer="T-01", session=None, msg_id=4242)
        bursts_before = fw.stats.commands_accepted  # (a slow loop may let the watchdog end one)
        await therapist.publish(st.topics.estop, estop, qos=1)
        await wait_until(lambda: any(a["command_msg_id"] == 4242 for a in answers), "no answer")
        await wait_until(lambda: fw.estop_latched and not fw.stim_state.stimulating, "not off")
        assert st.session.stim_state == "estop"
        sent = await asyncio.gather(*floods)
        # every flood message is refused and counted, none lost (the last may still queue)
        await wait_until(lambda: st.gate.refused >= sum(sent), "flood not all refused", 90.0)
        assert not st.run.done()  # the session goes on; the stop only latched stimulation
        reader.cancel()
    ours = next(a for a in answers if a["command_msg_id"] == 4242)
    assert ours["accepted"] and ours["latched"]
    assert st.publisher.stats.handler_errors == 0 and st.gate.errors == 0
    assert st.publisher.stats.estops_received > 100  # the garbage on the stop's topic came too
    assert st.gate.refused == sum(sent) and st.gate.accepted == 1, (stats, sent)
    assert fw.stats.commands_accepted == bursts_before  # the running burst stopped; none after
