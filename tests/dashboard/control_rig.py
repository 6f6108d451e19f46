"""A simulated session at full speed with a dashboard control pressed at a chosen signal time, as
the therapist window would press it (through the dashboard's control queue)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.settings import Settings
from devices.registry import open_device
from feedback.dashboard.link import DashboardLink
from feedback.dashboard.process import DashboardProcess
from feedback.outputs.base import Listener
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.session_store import SessionStore
from feedback.outputs.topics import Topics
from feedback.pipeline import Tick
from feedback.session import Session, SessionResult
from feedback.station import compose


def events_of(db: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = sqlite3.connect(db).execute("SELECT kind, detail_json FROM events ORDER BY seq")
    return [(k, json.loads(d)) for k, d in rows]


@dataclass
class ControlRun:
    result: SessionResult
    session: Session
    link: DashboardLink
    rate: float
    log: list[tuple[str, dict[str, Any]]]
    ticks: list[Tick] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # each distinct dashboard note, in order


async def run_pressing(
    tmp_path: Path, s: Settings, control: object, press_at_s: float, duration_s: float
) -> ControlRun:
    topics = Topics(s.session.clinic, s.session.station)
    publisher = MqttPublisher("mqtt://127.0.0.1:9", topics, client_id="st")  # never run
    store = SessionStore(tmp_path / "s.db")
    device = open_device("sim?speed=max", s)
    ticks: list[Tick] = []
    notes: list[str] = []
    stop = asyncio.Event()
    async with device:
        session = compose(s, device, publisher, store, duration_s=duration_s)
        dashboard = DashboardProcess()  # not started: its control queue is enough
        link = DashboardLink(s, device.info, dashboard, session.commands)
        session.add_output(link)
        rate = device.info.rate_hz

        def listen(tick: Tick) -> None:
            before = not ticks or ticks[-1].processed.block.end_index < press_at_s * rate
            if before and tick.processed.block.end_index >= press_at_s * rate:
                dashboard._controls.put(control)  # as the window does
            ticks.append(tick)
            if not notes or notes[-1] != link.note:
                notes.append(link.note)

        session.add_output(Listener(on_tick=listen))
        writer = asyncio.create_task(store.run())
        controls = asyncio.create_task(link.run_controls(poll_s=0.001))
        result = await asyncio.wait_for(session.run(stop), 60.0)
        await asyncio.wait_for(store.flush(), 5.0)
        for task in (controls, writer):
            task.cancel()
    return ControlRun(result, session, link, rate, events_of(tmp_path / "s.db"), ticks, notes)
