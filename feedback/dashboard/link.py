"""Connects a running Session to the dashboard process: ticks out, controls in."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from config.protocols import available_protocols, prescribed_reps
from feedback.calibration import CalibrationResult
from feedback.dashboard.controls import (
    Calibrate,
    EmergencyStopRequest,
    PickProtocol,
    RearmRequest,
    SetBand,
    StartStop,
)
from feedback.dashboard.feed import DashboardFeed, DashFrame, Header
from feedback.dashboard.process import DashboardProcess
from feedback.outputs.audio import AudioCues
from feedback.pipeline import Tick
from feedback.session import Session

log = logging.getLogger(__name__)
STATUS_LOG_S = 10.0  # how often -v logs the dashboard's frames and memory (make soak reads it)


class DashboardLink:
    def __init__(self, session: Session, process: DashboardProcess, fps: float = 30.0) -> None:
        s = session.settings
        info = session.device.info
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
        self.session = session
        self.process = process
        self.feed = DashboardFeed(header, info.rate_hz)
        self._period = 1.0 / fps
        self.note = ""
        self.audio: AudioCues | None = None
        session.tick_listeners.append(self.on_tick)
        session.rep_listeners.append(self.feed.add_rep)

    def on_tick(self, tick: Tick) -> None:
        """From the processing loop: decimate into the ring, nothing more (a few µs)."""
        self.feed.add(tick)
        if tick.calibration is not None:  # the mid-session calibration's prompt, as it runs
            c = tick.calibration
            self.note = f"calibration: {c.instruction} ({c.step_left_s:.0f} s)"
        if tick.calibrated is not None:
            self._calibrated(tick.calibrated)

    def _calibrated(self, result: CalibrationResult) -> None:
        if result.warnings:
            self.note = "calibration failed its checks, NOT stored: " + "; ".join(result.warnings)
            return
        mvc = ", ".join(f"{c} {v * 1000:.0f} µV" for c, v in result.mvc_mv.items())
        self.note = f"calibration stored, in use: MVC {mvc}"
        good = result.apply(self.session.settings).calibration.mvc_mv
        self.feed.header = replace(self.feed.header, mvc_mv=dict(good), calibrated=True)

    async def run_frames(self) -> None:
        """Between blocks, `fps` times a second: snapshot the window and offer it (latest wins).
        Building a frame (copying the 10 s window) stays out of the per-block path."""
        while True:
            await asyncio.sleep(self._period)
            frame = self._frame()
            if frame is not None:
                self.process.offer(frame)

    def _frame(self) -> DashFrame | None:
        s, stats = self.session, self.session.device.stats
        frame = self.feed.frame(
            link=stats.state.value,
            gaps=stats.gaps,
            protocol_errors=stats.protocol_errors,
            mqtt="up" if s.publisher.connected else "down",
            stim_state=s.stim.state,
            stim_bursts=s.stim.controller.interlock.bursts,
            note=self.note,
        )
        return frame

    def final_frame(self) -> None:
        frame = self._frame()
        if frame is not None:
            self.process.offer(frame)

    async def run_controls(self, stop: asyncio.Event, poll_s: float = 0.02) -> None:
        next_log = time.monotonic() + STATUS_LOG_S
        while True:
            if time.monotonic() >= next_log:
                next_log += STATUS_LOG_S
                p = self.process
                log.debug("dashboard: %d frames drawn, %d kB", p.total_frames, p.rss_kb)
            for control in self.process.controls():
                try:
                    await self._apply(control, stop)
                except Exception as exc:  # logged in the session, never swallowed
                    log.exception("dashboard control %s failed", type(control).__name__)
                    error = f"{type(exc).__name__}: {exc}"
                    name = type(control).__name__
                    self.session.log_event("control_failed", {"control": name, "error": error})
                    self.note = f"{name} failed: {error}"
            await asyncio.sleep(poll_s)

    async def _apply(self, control: object, stop: asyncio.Event) -> None:
        s = self.session
        if isinstance(control, EmergencyStopRequest):
            await s.stim.emergency_stop(control.source)
        elif isinstance(control, RearmRequest):
            await s.stim.rearm(control.source)
        elif isinstance(control, SetBand):
            if not s.change_band(control.low_pct, control.high_pct, "dashboard"):
                self.note = f"band {control.low_pct}–{control.high_pct} % MVC refused (see log)"
        elif isinstance(control, StartStop) and not control.start:
            stop.set()
        elif isinstance(control, Calibrate):
            s.log_event("calibrate_requested", {})
            s.calibrate()
            self.note = "calibration: starting"
        elif isinstance(control, PickProtocol):
            s.log_event("protocol_picked", {"name": control.name})
            s.change_protocol(control.name, "dashboard")  # a refusal raises: control_failed
            self.note = f"protocol {control.name} from the next rest"
