"""The session runner and its outputs (issue 12): one interface, bounded lossless queues whose
overflow is a counted typed error, the station status built once per block, and the dashboard's
buttons as the same typed commands MQTT gives."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from config.loader import load_settings
from devices.registry import open_device
from feedback.control import commands as cmd
from feedback.dashboard import controls
from feedback.dashboard.link import as_command
from feedback.outputs.base import (
    BlockDone,
    Item,
    Listener,
    Output,
    OutputFull,
    Policy,
    SessionClosed,
    SessionOpened,
    idle,
)
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.recorder import Recorder
from feedback.outputs.session_store import SessionStore
from feedback.outputs.topics import Topics
from feedback.pipeline import Pipeline
from feedback.session import Session
from feedback.station import compose, station_outputs


@dataclass
class Recording:
    """An output that keeps what it was offered; `full_after` makes it refuse like a full queue."""

    name: str = "recording"
    policy: Policy = Policy.LOSSLESS
    restartable: bool = False
    full_after: int | None = None
    items: list[Item] = field(default_factory=list)

    def offer(self, item: Item) -> None:
        if self.full_after is not None and len(self.items) >= self.full_after:
            raise OutputFull(self.name, self.full_after)
        self.items.append(item)

    async def run(self) -> None:
        await idle()

    async def drained(self, timeout_s: float) -> bool:
        return True


async def run_session(tmp_path: Path, *outputs: Output, seconds: float = 1.0) -> Session:
    s = load_settings(environ={})
    topics = Topics(s.session.clinic, s.session.station)
    publisher = MqttPublisher("mqtt://127.0.0.1:9", topics, client_id="st")  # never run
    store = SessionStore(tmp_path / "s.db")
    async with open_device("sim?speed=max", s) as device:
        session = compose(s, device, publisher, store, duration_s=seconds, extra=outputs)
        await asyncio.wait_for(session.run(asyncio.Event()), 30)
    store.close()
    return session


def test_every_station_output_has_the_one_interface() -> None:
    s = load_settings(environ={}, overrides={"mqtt.stream_hz": 10.0})
    publisher = MqttPublisher("mqtt://127.0.0.1:9", Topics("c", "s"), client_id="st")
    outputs = station_outputs(s, publisher, SessionStore(Path(":memory:")), record=Path("x.csv"))
    assert [o.name for o in outputs] == ["mqtt", "session_log", "stream", "recorder"]
    for out in outputs:
        assert isinstance(out, Output) and isinstance(out.policy, Policy)
    assert not isinstance(object(), Output)  # the protocol check is not vacuous


async def test_the_status_is_built_once_per_block_and_shared(tmp_path: Path) -> None:
    a, b = Recording("a"), Recording("b")
    session = await run_session(tmp_path, a, b)
    blocks_a = [i for i in a.items if isinstance(i, BlockDone)]
    blocks_b = [i for i in b.items if isinstance(i, BlockDone)]
    assert len(blocks_a) == session.result.blocks > 0
    assert all(x is y for x, y in zip(blocks_a, blocks_b, strict=True))  # one item, both
    assert isinstance(a.items[0], SessionOpened) and isinstance(a.items[-1], SessionClosed)


async def test_a_full_lossless_output_is_counted_and_the_session_goes_on(tmp_path: Path) -> None:
    full = Recording("slow_disk", full_after=5)
    counted = Listener()
    session = await run_session(tmp_path, full, counted)
    r = session.result
    assert r.stopped_by == "duration" and r.blocks > 50
    refused = counted.items - len(full.items)
    assert refused > 0 and r.outputs_refused == {"slow_disk": refused}
    assert r.report()["outputs_refused"] == {"slow_disk": refused}
    # Negative control: an output with room is never reported.
    ok = await run_session(tmp_path / "2", Recording("roomy"))
    assert ok.result.outputs_refused == {}


async def test_the_publisher_learns_the_session_through_its_api(tmp_path: Path) -> None:
    """The MQTT output tells its publisher the session (named in the station's last will) by
    `begin_session`; the id is no attribute for anyone to set."""
    s = load_settings(environ={})
    publisher = MqttPublisher("mqtt://127.0.0.1:9", Topics("c", "s"), client_id="st")
    assert publisher.session_id is None
    with pytest.raises(AttributeError):
        publisher.session_id = "S1"  # type: ignore[misc]
    store = SessionStore(tmp_path / "s.db")
    async with open_device("sim?speed=max", s) as device:
        session = compose(s, device, publisher, store, duration_s=0.2)
        await asyncio.wait_for(session.run(asyncio.Event()), 30)
    store.close()
    assert publisher.session_id == session.session_id
    will = json.loads(publisher._will().payload)  # what the broker says when the station dies
    assert will["session"] == session.session_id and will["state"] == "offline"


def test_session_store_queue_is_bounded(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db", capacity=2)
    store.add_event("S1", 1.0, "a", {})
    store.add_event("S1", 2.0, "b", {})
    with pytest.raises(OutputFull, match="session_log"):
        store.add_event("S1", 3.0, "c", {})
    assert store.refused == 1
    store.close()


def test_recorder_queue_is_bounded(tmp_path: Path) -> None:
    s = load_settings(environ={})
    rate, channels = 2000.0, ("VM", "VL")
    pipeline = Pipeline(s, rate, channels)
    from devices.base import SampleBlock

    block = SampleBlock(0, 0.0, rate, channels, np.zeros((2, 20), np.float32))
    tick = pipeline.process(block)
    rec = Recorder(tmp_path / "r.csv", rate_hz=rate, channels=channels, session_id="S1",
                   patient="P-0001", group_delay_ms=0.0, capacity=1)  # fmt: skip
    rec.put(tick)
    with pytest.raises(OutputFull, match="recorder"):
        rec.put(tick)
    assert rec.refused == 1


def test_dashboard_buttons_are_the_commands_mqtt_gives() -> None:
    assert as_command(controls.SetBand(30.0, 50.0)) == cmd.ChangeBand(low_pct=30.0, high_pct=50.0)
    assert as_command(controls.EmergencyStopRequest()) == cmd.EmergencyStop(source="dashboard")
    assert as_command(controls.RearmRequest()) == cmd.Rearm(source="dashboard")
    assert as_command(controls.StartStop(start=False)) == cmd.Stop()
    assert as_command(controls.StartStop(start=True)) is None
    assert as_command(controls.Calibrate()) == cmd.Calibrate()
    assert as_command(controls.PickProtocol("quad-sets")) == cmd.PickProtocol(name="quad-sets")
    mqtt = cmd.from_body({"action": "change_band", "issuer": "T-01", "msg_id": 7,
                          "low_pct": 30.0, "high_pct": 50.0})  # fmt: skip
    assert mqtt == cmd.ChangeBand(low_pct=30.0, high_pct=50.0, source="therapist_command",
                                  issuer="T-01", msg_id=7)  # fmt: skip


async def test_a_command_whose_handler_fails_is_a_control_failed_event(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    seen = Listener(on_event=lambda e: events.append((e.kind, e.detail)))
    s = load_settings(environ={})
    publisher = MqttPublisher("mqtt://127.0.0.1:9", Topics("c", "s"), client_id="st")
    async with open_device("sim?speed=max", s) as device:
        session = compose(s, device, publisher, SessionStore(tmp_path / "s.db"),
                          duration_s=1.0, extra=[seen])  # fmt: skip
        session.commands.submit(cmd.PickProtocol(name="no-such"))  # before run: no pipeline
        assert events == []  # held until the session opens: session_start comes first
        await asyncio.wait_for(session.run(asyncio.Event()), 30)
    (failed,) = [d for k, d in events if k == "control_failed"]
    assert failed["control"] == "PickProtocol" and failed["source"] == "dashboard"
    assert "no session running" in str(failed["error"]) and session.commands.errors == 1


async def test_a_cancelled_session_stops_its_loop_and_driver_and_closes(tmp_path: Path) -> None:
    """Cancelling run() from outside (a supervisor, a test's teardown) still ends the loop and the
    stimulation driver, closes the session for its outputs, and reaches the caller as a
    cancellation (it was swallowed while the loop was being awaited)."""
    s = load_settings(environ={})
    topics = Topics(s.session.clinic, s.session.station)
    publisher = MqttPublisher("mqtt://127.0.0.1:9", topics, client_id="st")  # never run
    store = SessionStore(tmp_path / "s.db")
    seen = Recording()
    before = asyncio.all_tasks()
    async with open_device("sim", s) as device:  # real time: still running when cancelled
        session = compose(s, device, publisher, store, duration_s=60.0, extra=(seen,))
        task = asyncio.create_task(session.run(asyncio.Event()))
        await asyncio.sleep(0.5)
        assert session.running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not session.running
        await asyncio.sleep(0.05)
        assert asyncio.all_tasks() - before <= {asyncio.current_task()}  # nothing left behind
    store.close()
    assert isinstance(seen.items[-1], SessionClosed)
