"""Connects a running session to the dashboard process: an output for the ticks, the rep table
and the notes; the window's buttons come back as typed commands on the session's CommandBus.
Nothing here reaches into the session: what it shows comes with the items it is offered."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from config.names import available_protocols
from config.protocols import prescribed_reps
from config.settings import Settings
from devices.base import DeviceInfo
from feedback.calibration import CalibrationResult
from feedback.control import commands as cmd
from feedback.control.bus import CommandBus
from feedback.dashboard.controls import (
    Calibrate,
    Control,
    EmergencyStopRequest,
    RearmRequest,
    SetBand,
    StartStop,
)
from feedback.dashboard.feed import DashboardFeed, DashFrame, Header
from feedback.dashboard.process import DashboardProcess
from feedback.outputs.audio import AudioCues
from feedback.outputs.base import (
    BlockDone,
    Item,
    Policy,
    RepDone,
    SessionEvent,
    StationStatus,
)
from feedback.pipeline import Tick

log = logging.getLogger(__name__)
STATUS_LOG_S = 10.0  # how often -v logs the dashboard's frames and memory (make soak reads it)


def as_command(control: Control) -> cmd.Command | None:
    """A dashboard button as the typed command MQTT would give (None: nothing to do)."""
    if isinstance(control, EmergencyStopRequest):
        return cmd.EmergencyStop(source=control.source)
    if isinstance(control, RearmRequest):
        return cmd.Rearm(source=control.source)
    if isinstance(control, SetBand):
        return cmd.ChangeBand(low_pct=control.low_pct, high_pct=control.high_pct)
    if isinstance(control, StartStop):
        return None if control.start else cmd.Stop()
    if isinstance(control, Calibrate):
        return cmd.Calibrate()
    return cmd.PickProtocol(name=control.name)


class DashboardLink:
    name = "dashboard"
    policy = Policy.LATEST_WINS
    restartable = True

    def __init__(
        self,
        settings: Settings,
        info: DeviceInfo,
        process: DashboardProcess,
        commands: CommandBus,
        fps: float = 30.0,
    ) -> None:
        s = settings
        header = Header(
            patient=s.session.patient,
            protocol=s.protocol.name,
            protocols=tuple(available_protocols()),
            channels=info.channels,
            target_channel=s.target.channel,
            mvc_mv=dict(s.calibration.mvc_mv),
            trigger_fraction=s.stim_burst.trigger_fraction,
            reps_total=prescribed_reps(s.protocol),
            sets=s.protocol.sets,
            calibrated=s.calibration.calibrated,
        )
        self.settings = settings
        self.commands = commands
        self.process = process
        self.feed = DashboardFeed(header, info.rate_hz)
        self._period = 1.0 / fps
        self.note = ""
        self.status = StationStatus()
        self.audio: AudioCues | None = None

    # -- the output side: from the processing loop, a few µs --------------------------------
    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone):
            self.status = item.status
            self.on_tick(item.tick)
        elif isinstance(item, RepDone):
            self.feed.add_rep(item.metrics)
        elif isinstance(item, SessionEvent):
            self._event(item)

    async def run(self) -> None:
        await asyncio.gather(self.run_frames(), self.run_controls())

    async def drained(self, timeout_s: float) -> bool:
        return True

    def on_tick(self, tick: Tick) -> None:
        """Decimate into the ring, nothing more."""
        self.feed.add(tick)
        if tick.calibration is not None:  # the mid-session calibration's prompt, as it runs
            c = tick.calibration
            self.note = f"calibration: {c.instruction} ({c.step_left_s:.0f} s)"
        if tick.calibrated is not None:
            self._calibrated(tick.calibrated)

    def _event(self, ev: SessionEvent) -> None:
        d = ev.detail
        if ev.kind == "control_failed" and d.get("source") == "dashboard":
            self.note = f"{d['control']} failed: {d['error']}"
        elif ev.kind == "band_refused" and d.get("source") == "dashboard" and "low_pct" in d:
            self.note = f"band {d['low_pct']}–{d['high_pct']} % MVC refused (see log)"

    def _calibrated(self, result: CalibrationResult) -> None:
        if result.warnings:
            self.note = "calibration failed its checks, NOT stored: " + "; ".join(result.warnings)
            return
        mvc = ", ".join(f"{c} {v * 1000:.0f} µV" for c, v in result.mvc_mv.items())
        self.note = f"calibration stored, in use: MVC {mvc}"
        good = result.apply(self.settings).calibration.mvc_mv
        self.feed.header = replace(self.feed.header, mvc_mv=dict(good), calibrated=True)

    # -- its own tasks ---------------------------------------------------------------------
    async def run_frames(self) -> None:
        """Between blocks, `fps` times a second: snapshot the window and offer it (latest wins).
        Building a frame (copying the 10 s window) stays out of the per-block path."""
        while True:
            await asyncio.sleep(self._period)
            frame = self._frame()
            if frame is not None:
                self.process.offer(frame)

    def _frame(self) -> DashFrame | None:
        st = self.status
        return self.feed.frame(
            link=st.link,
            gaps=st.gaps,
            protocol_errors=st.protocol_errors,
            mqtt="up" if st.mqtt_up else "down",
            stim_state=st.stim_state,
            stim_bursts=st.stim_bursts,
            note=self.note,
        )

    def final_frame(self) -> None:
        frame = self._frame()
        if frame is not None:
            self.process.offer(frame)

    async def run_controls(self, poll_s: float = 0.02) -> None:
        next_log = time.monotonic() + STATUS_LOG_S
        while True:
            if time.monotonic() >= next_log:
                next_log += STATUS_LOG_S
                p = self.process
                log.debug("dashboard: %d frames drawn, %d kB", p.total_frames, p.rss_kb)
            for control in self.process.controls():
                self.press(control)
            await asyncio.sleep(poll_s)

    def press(self, control: Control) -> None:
        """A button, as a command on the bus; a failure comes back as a `control_failed`
        event (its note is set in `_event`), so the optimistic note goes first."""
        command = as_command(control)
        if command is None:
            return
        if isinstance(command, cmd.Calibrate):
            self.note = "calibration: starting"
        elif isinstance(command, cmd.PickProtocol):
            self.note = f"protocol {command.name} from the next rest"
        self.commands.submit(command)
