"""The dashboard's EMERGENCY STOP and the therapist's MQTT `emergency_stop` do the same thing: latch
stimulation (host and firmware), keep the session running, log it; ending the session is `stop`.

A whole Session with the simulator, its SQLite log and a real (not started) DashboardProcess whose
control queue the dashboard window would write to; the MQTT command goes through the CommandGate
as a broker delivery would hand it over.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stim_rig import stim_settings

from devices.simulator import SimulatedDevice
from feedback.control.gate import CommandBus, CommandGate, make_command
from feedback.dashboard.controls import EmergencyStopRequest, RearmRequest, SetBand
from feedback.dashboard.link import DashboardLink
from feedback.dashboard.process import DashboardProcess
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.session_store import SessionStore
from feedback.outputs.topics import Topics
from feedback.station import compose


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)


def settings() -> Any:
    return stim_settings(
        **{
            "simulator.first_rest_s": 0.2,
            "protocol.ready_s": 0.1,
            "protocol.work_s": 1.5,
            "protocol.hold_s": 1.0,
            "protocol.rest_s": 0.5,
            "stimulation.min_rest_s": 1.0,
            "stim_burst.hold_s": 1.0,
            "mqtt.therapists": ["T-01"],
        }
    )


class Station:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = s = settings()
        self.device = SimulatedDevice(s.simulator, block_ms=10.0)
        topics = Topics(s.session.clinic, s.session.station)
        publisher = MqttPublisher("mqtt://127.0.0.1:9", topics, client_id="st")  # never run
        self.db = tmp_path / "s.db"
        self.store = SessionStore(self.db)
        self.bus = CommandBus()
        self.session = compose(
            s, self.device, publisher, self.store, duration_s=4.0, commands=self.bus
        )
        self.gate = CommandGate(
            topics, ["T-01"], self.bus, current_session=lambda: self.session.session_id
        )
        self.dashboard = DashboardProcess()  # the child is not started: its queue is enough
        self.link = DashboardLink(s, self.device.info, self.dashboard, self.bus)
        self.session.add_output(self.link)

    def press(self, control: object) -> None:
        self.dashboard._controls.put(control)  # as the dashboard window does

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        rows = sqlite3.connect(self.db).execute("SELECT kind, detail_json FROM events ORDER BY seq")
        return [(k, json.loads(d)) for k, d in rows]


@pytest.mark.parametrize("source", ["dashboard", "mqtt"])
async def test_emergency_stop_latches_and_the_session_goes_on(source: str, tmp_path: Path) -> None:
    st = Station(tmp_path)
    fw = st.device.firmware
    stop = asyncio.Event()
    async with st.device:
        writer = asyncio.create_task(st.store.run())
        controls = asyncio.create_task(st.link.run_controls(poll_s=0.005))
        run = asyncio.create_task(st.session.run(stop))
        await wait_until(lambda: fw.stim_state.stimulating, "no burst")
        if source == "dashboard":
            st.press(EmergencyStopRequest("dashboard"))
        else:
            cmd = make_command("emergency_stop", issuer="T-01", session=None)
            assert st.gate.handle(cmd).accepted
        await wait_until(lambda: fw.estop_latched, "not latched")
        assert st.session.stim_state == "estop"
        await asyncio.sleep(1.0)
        assert not run.done()  # the e-stop did not end the session
        result = await asyncio.wait_for(run, 15.0)
        await asyncio.wait_for(st.store.flush(), 5.0)
        for task in (controls, writer):
            task.cancel()
    assert result.stopped_by == "duration" and result.samples == 8_000
    assert fw.estop_latched and fw.stats.commands_accepted == 1
    log = st.events()
    kinds = [k for k, _ in log]
    expected = {"dashboard": "dashboard", "mqtt": "therapist_command"}[source]
    assert ("stim_estop", {"source": expected}) in log
    assert "stim_estop_ack" in kinds and kinds.count("stim_burst") == 1
    assert ("stim_refused", {"reason": "estop_latched", "detail": "", "period": 2}) in log


async def test_rearm_from_the_dashboard_clears_host_and_firmware(tmp_path: Path) -> None:
    st = Station(tmp_path)
    fw = st.device.firmware
    stop = asyncio.Event()
    async with st.device:
        controls = asyncio.create_task(st.link.run_controls(poll_s=0.005))
        run = asyncio.create_task(st.session.run(stop))
        st.press(EmergencyStopRequest("dashboard"))
        await wait_until(lambda: fw.estop_latched, "not latched")
        st.press(RearmRequest("dashboard"))
        rearmed = lambda: not fw.estop_latched and st.session.stim_state != "estop"  # noqa: E731
        await wait_until(rearmed, "re-arm")
        stop.set()
        await asyncio.wait_for(run, 5.0)
        controls.cancel()
    assert st.session.result.stopped_by == "signal"


async def test_band_changes_from_dashboard_and_mqtt_pass_the_same_config_checks(
    tmp_path: Path,
) -> None:
    st = Station(tmp_path)
    stop = asyncio.Event()
    async with st.device:
        writer = asyncio.create_task(st.store.run())
        controls = asyncio.create_task(st.link.run_controls(poll_s=0.005))
        run = asyncio.create_task(st.session.run(stop))
        await wait_until(lambda: st.session.pipeline is not None, "no pipeline")
        pipeline = st.session.pipeline
        assert pipeline is not None
        st.press(SetBand(0.0, 60.0))  # a 0 % lower edge: the trigger would fire at rest
        st.press(SetBand(35.0, 65.0))
        await wait_until(lambda: pipeline.detector.low_pct == 35.0, "dashboard band")
        # passes the command schema (1–100) and the gate (high > low), not the hysteresis
        narrow = make_command(
            "change_band", issuer="T-01", session=st.session.session_id, low_pct=40, high_pct=42
        )
        assert st.gate.handle(narrow).accepted
        good = make_command(
            "change_band", issuer="T-01", session=st.session.session_id, low_pct=25, high_pct=55
        )
        assert st.gate.handle(good).accepted
        assert (pipeline.detector.low_pct, pipeline.detector.high_pct) == (25.0, 55.0)
        stop.set()
        await asyncio.wait_for(run, 5.0)
        await asyncio.wait_for(st.store.flush(), 5.0)
        for task in (controls, writer):
            task.cancel()
    log = st.events()
    refused = [d for k, d in log if k == "band_refused"]
    assert [(d["source"], d["low_pct"]) for d in refused] == [
        ("dashboard", "0.0"),
        ("therapist_command", "40"),
    ]
    assert "greater than or equal to 1" in refused[0]["reason"]
    assert "hysteresis" in refused[1]["reason"]
    assert [(d["source"], d["low_pct"]) for k, d in log if k == "band_set"] == [
        ("dashboard", 35.0),
        ("therapist_command", 25.0),
    ]
