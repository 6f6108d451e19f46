"""Runs one biofeedback session: device → pipeline → fan-out, owning the event loop's I/O.

The processing loop only calls non-blocking methods on the outputs (`publish`, `publish_live`,
`add_event`, assignment to the view), so no output can stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from config.protocols import load_protocol, prescribed_reps
from config.settings import Settings
from devices.base import Device, LinkStats
from devices.simulator import SimulatedDevice
from feedback.block_timing import BlockTiming
from feedback.calibration import CalibrationResult
from feedback.clinic.commands import CommandBus, Verdict
from feedback.contraction_report import (
    CONTRACT_V1_CUE_KINDS,
    contraction_metrics,
)
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.recorder import Recorder, RecordOptions
from feedback.outputs.session_store import SessionStore
from feedback.outputs.stream_source import StreamIdentity, StreamSource
from feedback.outputs.terminal import ViewState
from feedback.outputs.topics import MessageNumberer, Topics
from feedback.pipeline import Pipeline, Tick
from feedback.placement import session_montage
from feedback.processing.chain import EmgChain
from feedback.processing.metrics import Contraction
from feedback.processing.offline_count import OfflineCounter
from feedback.profiles import profile_path, save_calibration
from feedback.rep_metrics import RepMetrics
from feedback.snapshot import local_settings, published_device, published_settings
from feedback.stimulation.driver import StimDriver

if TYPE_CHECKING:
    from feedback.outputs.lsl_outlet import LslOutlet

log = logging.getLogger(__name__)
REPORT_CONTRACTIONS = 100  # ~30 kB of contraction metrics in the report and session_end


def new_session_id() -> str:
    return time.strftime("S%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(slots=True)
class SessionResult:
    session_id: str
    samples: int = 0
    blocks: int = 0
    reps: int | None = 0  # None: no protocol with reps was followed (free practice, a replay)
    time_in_target_s: float = 0.0
    duration_s: float = 0.0
    cues: int = 0
    compute_us: BlockTiming = field(default_factory=BlockTiming)  # constant memory, any length
    link: LinkStats | None = None
    group_delay_ms: float = 0.0
    mqtt_published: int = 0
    mqtt_backlog: int = 0
    stopped_by: str = "duration"
    # The newest contractions for the report and session_end (each one is also its own event):
    # all of them made a 4-hour session_end ~420 kB, past the clinic's 64 kB message limit.
    contractions: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=REPORT_CONTRACTIONS)
    )
    contractions_total: int = 0
    contraction_rule: dict[str, Any] = field(default_factory=dict)
    contractions_offline: dict[str, Any] | None = None  # the non-causal second pass
    calibration: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        link = self.link or LinkStats()
        return {
            "session_id": self.session_id,
            "samples": self.samples,
            "blocks": self.blocks,
            "gaps": link.gaps,
            "samples_lost": link.samples_lost,
            "protocol_errors": link.protocol_errors,
            "samples_before_info": link.samples_before_info,
            "reconnects": link.reconnects,
            "link_down_s": round(link.down_s, 3),
            "reps": self.reps,
            "time_in_target_s": round(self.time_in_target_s, 3),
            "duration_s": round(self.duration_s, 3),
            "cues": self.cues,
            "block_compute_us_p50": round(self.compute_us.percentile(50), 1),
            "block_compute_us_p99": round(self.compute_us.percentile(99), 1),
            "envelope_group_delay_ms": round(self.group_delay_ms, 1),
            "mqtt_published": self.mqtt_published,
            "mqtt_backlog_at_end": self.mqtt_backlog,
            "stopped_by": self.stopped_by,
            "calibration": self.calibration,
            "contractions": self.contractions_total,  # live: causal, as the session saw them
            "contraction_rule": self.contraction_rule,
            "contraction_metrics": list(self.contractions),  # the newest REPORT_CONTRACTIONS
            "contractions_offline": self.contractions_offline,
            "record": self.record,
        }


class Session:
    def __init__(
        self,
        settings: Settings,
        device: Device,
        publisher: MqttPublisher,
        store: SessionStore,
        *,
        duration_s: float | None,
        view: ViewState | None = None,
        commands: CommandBus | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.publisher = publisher
        self.store = store
        self.duration_s = duration_s
        self.view = view or ViewState()
        self.session_id = new_session_id()
        self.result = SessionResult(self.session_id)
        self._reps_counted = settings.protocol.kind != "free"  # a timed protocol was followed
        self.result.reps = 0 if self._reps_counted else None
        self._offline: OfflineCounter | None = None
        s = settings.session
        self.topics = Topics(s.clinic, s.station)
        self.numberer = MessageNumberer(self.session_id)
        self._live_period = 1.0 / settings.mqtt.live_hz
        self._next_live = 0.0
        self._last_onset_ms: float | None = None  # VM–VL onset difference, last contraction
        self._lsl: LslOutlet | None = None
        self.recorder: Recorder | None = None
        self.stim = StimDriver(settings, device, self._event)
        self.pipeline: Pipeline | None = None
        self.tick_listeners: list[Callable[[Tick], None]] = []  # e.g. the dashboard feed
        self.rep_listeners: list[Callable[[dict[str, Any]], None]] = []  # its rep table
        self.pain_before = settings.session.pain_before
        self.pain_after: int | None = None
        self.rep_metrics: RepMetrics | None = None
        self.stream: StreamSource | None = None  # binary live stream for remote dashboards
        self._stop = asyncio.Event()
        self._estops: set[asyncio.Future[float | None]] = set()
        self._switch_source = ""  # who picked the pending protocol
        self._cal_script: contextlib.AbstractContextManager[None] | None = None
        publisher.session_id = self.session_id  # named in the station's last will
        # Other station parts subscribe here: `commands.emergency_stop` (an asyncio.Event) and
        # `commands.on("emergency_stop", callback)` are how the stimulation controller stops.
        self.commands = commands
        if commands is not None:
            self._obey(commands)

    def _obey(self, bus: CommandBus) -> None:
        """Therapist commands that passed the gate (feedback.clinic.commands) act here."""

        def stop(cmd: dict[str, Any]) -> None:
            self.result.stopped_by = "therapist_stop"
            if cmd.get("pain_after") is not None:
                self.pain_after = int(cmd["pain_after"])
            self._stop.set()

        def emergency(cmd: dict[str, Any]) -> None:
            # As the dashboard's button: latch stimulation, keep the session running (ending it
            # is the separate `stop` command). The driver latches before it sends anything and
            # logs the outcome (acknowledged, no ack, not sent). The host latch is taken here,
            # before the handler returns; only sending to the device waits for a task.
            t0 = self.stim.latch("therapist_command")
            self._estops.add(asyncio.ensure_future(self.stim.send_estop(t0)))

        def band(cmd: dict[str, Any]) -> None:
            self.change_band(cmd["low_pct"], cmd["high_pct"], "therapist_command")

        def pain(cmd: dict[str, Any]) -> None:
            self.pain_after = int(cmd["pain_after"])

        bus.on("stop", stop)
        bus.on("emergency_stop", emergency)
        bus.on("change_band", band)
        bus.on("pain", pain)

    def change_band(self, low_pct: object, high_pct: object, source: str) -> bool:
        """A band change from any source, checked against the `[target]` constraints (the same
        as in the config file) before it acts; logged as `band_set` or `band_refused`."""
        try:
            target = self.settings.target.with_band(low_pct, high_pct)  # type: ignore[arg-type]
        except ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors())
            body = {"low_pct": str(low_pct), "high_pct": str(high_pct), "source": source}
            self._event("band_refused", {**body, "reason": reason[:300]})
            return False
        if self.pipeline is None:
            self._event("band_refused", {"source": source, "reason": "no session running"})
            return False
        self.pipeline.set_band(target.low_pct, target.high_pct)
        applied: dict[str, Any] = {"low_pct": target.low_pct, "high_pct": target.high_pct}
        self._event("band_set", {**applied, "source": source})
        return True

    def change_protocol(self, name: str, source: str) -> None:
        """Switch to protocol `name` at the next safe boundary (see Pipeline.change_protocol).
        Its band passes the station's `[target]` checks; an unknown name or a bad band raises
        (ProtocolError, ValidationError) and nothing changes. `protocol_changed` is logged when
        the switch takes effect."""
        if self.pipeline is None:
            raise RuntimeError("no session running")
        protocol, target = load_protocol(name)
        band = self.settings.target.with_band(target.low_pct, target.high_pct)
        self.pipeline.change_protocol(protocol, band.low_pct, band.high_pct)
        self._switch_source = source

    def calibrate(self) -> None:
        """Calibrate now, during the session (Pipeline.start_calibration). The demo device's
        simulated patient follows the prompts, as in the `--calibrate` flow."""
        if self.pipeline is None:
            raise RuntimeError("no session running")
        if self.pipeline.calibrating:
            return
        self.pipeline.start_calibration()
        if isinstance(self.device, SimulatedDevice):
            self._cal_script = self.device.following_calibration(self.settings.calibration)
            self._cal_script.__enter__()

    def _calibrated(self, result: CalibrationResult) -> None:
        """A mid-session calibration ended: stored and logged when it passed its checks (the
        pipeline already uses it), else logged as rejected and nothing changes."""
        if self._cal_script is not None:
            self._cal_script.__exit__(None, None, None)
            self._cal_script = None
        mvc = {c: round(v, 6) for c, v in result.mvc_mv.items()}
        if result.warnings:
            self._event("calibration_rejected", {"warnings": result.warnings, "mvc_mv": mvc})
            return
        save_calibration(profile_path(self.settings), result)  # a small file, written atomically
        self.settings = result.apply(self.settings)
        self.result.calibration = {
            "calibrated": True,
            "source": "guided",
            "mvc_mv": {ch: round(v, 6) for ch, v in self.settings.calibration.mvc_mv.items()},
        }
        self.view.calibrated = True
        rest = {c: round(max(v, 0.0), 6) for c, v in result.rest_mean_mv.items()}
        self._event("calibration", {"mvc_mv": mvc, "rest_mv": rest, "source": "measured"})

    def _protocol_changed(self, tick: Tick) -> None:
        """A switch took effect in this tick: log it and restart the stimulation's periods."""
        assert tick.switched_at is not None
        self.stim.controller.new_timeline()
        if self.pipeline is not None and self.pipeline.protocol.kind != "free":
            self._reps_counted = True
        detail = {
            "name": tick.protocol,
            "from_index": tick.switched_at,
            "reps_done": tick.exercise.reps_done,
            "reps_total": tick.reps_total,
            "low_pct": tick.band[0],
            "high_pct": tick.band[1],
            "source": self._switch_source,
        }
        self._event("protocol_changed", detail)

    def record_command(self, verdict: Verdict) -> None:
        """Every command verdict goes into the session's events, accepted or refused."""
        self.log_event(
            "command_result",
            {
                "accepted": verdict.accepted,
                "reason": verdict.reason,
                "action": verdict.action,
                "issuer": verdict.issuer,
                "command_msg_id": verdict.msg_id,
            },
        )

    def make_recorder(self, path: Path) -> Recorder:
        info = self.device.info
        s = self.settings
        delay = EmgChain(s.processing, s.calibration, info.rate_hz, info.channels).group_delay_ms
        return Recorder(
            path,
            rate_hz=info.rate_hz,
            channels=info.channels,
            session_id=self.session_id,
            patient=s.session.patient,
            group_delay_ms=delay,
            options=RecordOptions.from_settings(s, session_montage(s, info.channels)),
        )

    # -- fan-out helpers: all non-blocking -------------------------------------------------
    def _session_message(self, topic: str, kind: str, body: dict[str, Any]) -> None:
        self.publisher.publish(topic, self.numberer.envelope(kind, body))
        if self._lsl is not None:  # the LSL marker stream (feedback.outputs.lsl_markers)
            self._lsl.on_message(kind, body)

    def log_event(self, kind: str, detail: dict[str, Any]) -> None:
        self._event(kind, detail)

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        now = time.time()
        self.store.add_event(self.session_id, now, kind, detail)
        if self.recorder is not None:  # stimulation bursts become spans in the record
            self.recorder.note(kind, detail)
        self._session_message(self.topics.event, kind, detail)

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> SessionResult:
        s = self.settings
        info = self.device.info
        pipeline = self.pipeline = Pipeline(s, info.rate_hz, info.channels)
        self.result.group_delay_ms = pipeline.chain.group_delay_ms
        self.rep_metrics = RepMetrics(
            info.channels, pipeline.target, info.rate_hz, s.onset.pair_window_ms
        )
        c = s.contractions
        self._offline = OfflineCounter(
            info.rate_hz,
            info.channels.index(pipeline.target),
            min_on_s=c.min_on_s,
            merge_gap_s=c.merge_gap_s,
        )
        self.result.contraction_rule = {
            "channel": pipeline.target,
            "min_on_s": c.min_on_s,
            "merge_gap_s": c.merge_gap_s,
            "live": "causal: each contraction counted once its dip has lasted merge_gap_s",
        }
        self.result.calibration = {
            "calibrated": s.calibration.calibrated,
            "source": s.calibration.source,
            "mvc_mv": {ch: s.calibration.mvc_mv.get(ch) for ch in info.channels},
        }
        if s.lsl.publish:  # before _start: session_start is the first marker
            from feedback.outputs.lsl_outlet import LslOutlet

            self._lsl = LslOutlet(s.lsl.prefix, info.rate_hz, info.channels, self.session_id)
        self._start(pipeline)
        if s.mqtt.stream_hz > 0:
            self.stream = self._stream_source(pipeline)
        # The one edge back into processing (docs/stimulation.md): a burst's sample interval to
        # blank, so the stimulation artefact is never read as activation.
        self.stim.blank = pipeline.blanker.add
        stim_task = asyncio.create_task(self.stim.run())
        consume = asyncio.create_task(self._consume(pipeline))
        stoppers = {asyncio.create_task(stop.wait()), asyncio.create_task(self._stop.wait())}
        done, _ = await asyncio.wait({consume, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
        if consume not in done:
            if not self._stop.is_set():
                self.result.stopped_by = "signal"
            consume.cancel()
        for task in stoppers:
            task.cancel()
        if self._estops:  # let a stop reach the device (and its outcome the log) first
            await asyncio.gather(*self._estops, return_exceptions=True)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await consume
        finally:
            # Whatever ended the loop (a device error included), the stimulation driver stops
            # its burst and the session is closed with its report and end time.
            await self._stop_stim(stim_task)
            if self._cal_script is not None:  # ended while calibrating: nothing is stored
                self._cal_script.__exit__(None, None, None)
            self._finish()
        return self.result

    async def _stop_stim(self, stim_task: asyncio.Task[None]) -> None:
        stim_task.cancel()
        try:
            await stim_task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the driver logs its own errors; this is the last resort
            log.exception("stimulation driver failed")
            self._event("stim_driver_error", {"error": f"{type(exc).__name__}: {exc}"})

    def _start(self, pipeline: Pipeline) -> None:
        s = self.settings
        info = self.device.info
        started = time.time()
        device = {
            "spec": info.spec,
            "kind": info.kind,
            "rate_hz": info.rate_hz,
            "channels": list(info.channels),
            "firmware": info.firmware_version,
            "serial": info.serial,
        }
        settings_snapshot = local_settings(s)  # the clinic gets less: see feedback.snapshot
        self.store.start_session(
            self.session_id,
            clinic=s.session.clinic,
            station=s.session.station,
            patient=s.session.patient,
            protocol=s.protocol.name,
            started_at=started,
            settings=settings_snapshot,
            device=device,
        )
        self.publisher.publish(
            self.topics.status,
            self.numberer.envelope("status", {"state": "in_session"}),
            retain=True,
        )
        self._session_message(
            self.topics.session,
            "session_start",
            {
                "patient": s.session.patient,
                "side": s.session.side,
                "protocol": s.protocol.name,
                "device": published_device(device),
                "settings": published_settings(s),
                "envelope_group_delay_ms": round(pipeline.chain.group_delay_ms, 1),
                "reps_prescribed": s.protocol.reps if self._reps_counted else None,
                "reps_counted": self._reps_counted,  # false: free practice, reps_prescribed moot
                "pain_before": self.pain_before,
                "montage": session_montage(s, info.channels),  # feedback.placement
            },
        )
        v = self.view
        v.patient, v.protocol = s.session.patient, s.protocol.name
        v.target_channel = s.target.channel
        v.band = (s.target.low_pct, s.target.high_pct)
        v.reps_total = prescribed_reps(s.protocol)
        v.reps_done = 0 if self._reps_counted else None
        v.group_delay_ms = pipeline.chain.group_delay_ms
        v.calibrated = s.calibration.calibrated
        v.calibration_source = s.calibration.source
        v.free = s.protocol.kind == "free"

    def _stream_source(self, pipeline: Pipeline) -> StreamSource:
        s, info = self.settings, self.device.info
        identity = StreamIdentity(
            session=self.session_id,
            channels=info.channels,
            target=pipeline.target,
            protocol=s.protocol.name,
            patient=s.session.patient,
            mvc_mv=tuple(s.calibration.mvc_mv.get(c, 0.0) for c in info.channels),
            reps_total=prescribed_reps(s.protocol),
            sets=s.protocol.sets,
        )
        return StreamSource(identity, info.rate_hz, s.mqtt.stream_hz)

    def _stream_out(self, tick: Tick, now: float) -> None:
        """Decimate the tick; when a packet is due, offer it on the latest-wins lane."""
        assert self.stream is not None
        self.stream.add(tick)
        if self.stream.due(now):
            stats = self.device.stats
            packet = self.stream.packet(
                link=stats.state.value,
                gaps=stats.gaps,
                protocol_errors=stats.protocol_errors,
                stim_state=self.stim.state,
                stim_bursts=self.stim.controller.interlock.bursts,
            )
            self.publisher.publish_live_bytes(self.topics.stream, packet)

    async def _consume(self, pipeline: Pipeline) -> None:
        rate = self.device.info.rate_hz
        limit = None if self.duration_s is None else round(self.duration_s * rate)
        last_end: int | None = None
        async for block in self.device.blocks():
            if last_end is not None and block.first_index > last_end:
                self._event(
                    "gap", {"from_index": last_end, "missing": block.first_index - last_end}
                )
            last_end = block.end_index
            self.stim.take_device_events()  # to the interlocks, and described in the log
            tick = pipeline.process(block)
            if tick.switched_at is not None:
                self._protocol_changed(tick)
            if tick.calibrated is not None:
                self._calibrated(tick.calibrated)
            self.stim.on_tick(tick)
            self._fan_out(tick)
            for listener in self.tick_listeners:
                listener(tick)
            if pipeline.exercise.finished:
                self.result.stopped_by = "protocol_complete"
                return
            if limit is not None and self.result.samples >= limit:
                return
        self.result.stopped_by = "device_ended"  # e.g. a replayed recording reached its end

    def _fan_out(self, tick: Tick) -> None:
        r = self.result
        block = tick.processed.block
        r.samples += block.n_samples
        r.blocks += 1
        r.compute_us.add(tick.compute_s * 1e6)
        if self._lsl is not None:
            self._lsl.publish(tick)
        ex = tick.exercise
        r.reps = ex.reps_done if self._reps_counted else None
        r.time_in_target_s = ex.in_band_s
        if self._offline is not None:
            self._offline.add(block.first_index, tick.processed.envelope)
        if self.recorder is not None:
            self.recorder.put(tick)
        self._contractions(tick.contractions)
        if self.rep_metrics is not None:
            free = self.pipeline is not None and self.pipeline.exercise.free
            self._reps(self.rep_metrics.update(tick, counting=not free))
        for cue in tick.cues:
            r.cues += 1
            body = {
                "kind": cue.kind,
                "value": cue.value,
                "index": cue.index,
                "t_sample": round(cue.t_sample, 6),
                **self._cue_context(tick),
            }
            self.store.add_event(self.session_id, time.time(), "cue", body)
            if cue.kind in CONTRACT_V1_CUE_KINDS:
                self._session_message(self.topics.cue, "cue", body)
        now = time.monotonic()
        if self.stream is not None:
            self._stream_out(tick, now)
        if now >= self._next_live:
            self._next_live = now + self._live_period
            self.publisher.publish_live(
                self.topics.live,
                self.numberer.live_envelope(
                    {
                        "pct_mvc": {k: round(v, 2) for k, v in tick.pct_mvc.items()},
                        "vm_vl_ratio": None
                        if tick.vm_vl_ratio is None
                        else round(tick.vm_vl_ratio, 3),
                        "phase": ex.phase.name.lower(),
                        "holding": ex.holding,
                        "reps": ex.reps_done if self._reps_counted else None,
                        "reps_counted": self._reps_counted,
                        "contractions": tick.contraction_count,
                        "index": block.end_index - 1,
                        "t_sample": round(block.t_arrival, 6),
                        **self._live_onsets(tick),
                    },
                ),
            )
        for raised in tick.band_raised:
            self._event(
                "band_raised",
                {
                    "low_pct": raised.low_pct,
                    "high_pct": raised.high_pct,
                    "from_index": raised.from_index,
                    "after_rep": raised.after_rep,
                },
            )
        v = self.view
        v.band = tick.band
        v.protocol, v.reps_total = tick.protocol, tick.reps_total
        v.pct_mvc = tick.pct_mvc
        env = tick.processed.envelope
        if env.shape[1]:
            v.envelope_mv = dict(zip(block.channels, env[:, -1].tolist(), strict=True))
        v.phase, v.holding, v.hold_progress = ex.phase.name.lower(), ex.holding, ex.hold_progress
        v.reps_done, v.phase_left_s, v.session_left_s = (
            ex.reps_done if self._reps_counted else None,
            ex.phase_left_s,
            ex.session_left_s,
        )
        v.reps_total = tick.reps_total
        v.free = self.pipeline is not None and self.pipeline.exercise.free
        v.contractions, v.contracting = tick.contraction_count, tick.contracting
        v.vm_vl_ratio = tick.vm_vl_ratio
        v.lsi = tick.lsi
        v.onset = self._onset_state(tick)
        v.problems = tick.problems or {}
        if tick.contractions:
            v.last_contraction = tick.contractions[-1]
        v.link = self.device.stats.state.value
        v.gaps = self.device.stats.gaps
        v.mqtt = "up" if self.publisher.connected else "down"
        v.mqtt_backlog = self.publisher.backlog

    def _cue_context(self, tick: Tick) -> dict[str, Any]:
        """What a tablet or buzzer needs besides the cue itself to show the patient's state."""
        ex = tick.exercise
        return {
            "phase": ex.phase.name.lower(),
            "phase_left_s": round(ex.phase_left_s, 2),
            "reps_done": ex.reps_done,  # an integer for the v1 contract: 0 in free practice
            "reps_total": tick.reps_total,
            "band": [round(tick.band[0], 2), round(tick.band[1], 2)],
        }

    @staticmethod
    def _onset_state(tick: Tick) -> dict[str, bool]:
        """Each channel's onset state at the block's last sample (all off until the rest
        baseline is known)."""
        o = tick.onsets
        if o is None or not o.active.shape[1]:
            return {}
        return dict(zip(tick.processed.block.channels, o.active[:, -1].tolist(), strict=True))

    def _live_onsets(self, tick: Tick) -> dict[str, Any]:
        onset_ms = self._last_onset_ms
        return {
            "lsi": None if tick.lsi is None else round(tick.lsi, 1),
            "onset": self._onset_state(tick),
            "vm_vl_onset_ms": None if onset_ms is None else round(onset_ms, 1),
        }

    def _reps(self, reps: list[dict[str, Any]]) -> None:
        """A rep's metrics, computed once (feedback.rep_metrics), to every output."""
        for metrics in reps:
            if metrics["achieved"]:
                self.store.add_rep(
                    self.session_id,
                    metrics["rep"],
                    metrics["at_index"],
                    time.time(),
                    metrics["time_to_band_s"],
                )
            self._session_message(self.topics.rep, "rep", metrics)
            for listener in self.rep_listeners:
                listener(metrics)

    def _contractions(self, counted: tuple[Contraction, ...] | list[Contraction]) -> None:
        for c in counted:
            if c.vm_vl_onset_ms is not None:
                self._last_onset_ms = c.vm_vl_onset_ms
            metrics = contraction_metrics(c)
            self.result.contractions.append(metrics)
            self.result.contractions_total += 1
            self._event("contraction", metrics)

    def _finish(self) -> None:
        r = self.result
        r.duration_s = r.samples / self.device.info.rate_hz
        r.link = self.device.stats
        last: list[Contraction] = []
        if self.pipeline is not None:  # a contraction still going at the end counts
            last = self.pipeline.finish()
            self._contractions(last)
        if self.rep_metrics is not None:
            self._reps(self.rep_metrics.finish(last))
        if self._offline is not None:
            offline = self._offline.result()
            r.contractions_offline = {
                "count": offline.count,
                "spans_s": [[round(a, 2), round(b, 2)] for a, b in offline.spans_s],
                "rest_mv": round(offline.rest_mv, 6),
                "reference_mv": round(offline.reference_mv, 6),
                "method": offline.method,
            }
        summary = r.report()
        # The end message cannot count its own delivery: the summary the clinic stores says
        # how many session messages came before it (msg_id 1..n), a completeness check; the
        # final `mqtt_published` is in the station's JSON report only (docs/metrics.md).
        del summary["mqtt_published"], summary["mqtt_backlog_at_end"]
        summary["messages_before_end"] = self.numberer.sent
        self.store.end_session(self.session_id, time.time(), summary)
        self.publisher.discard_live()
        self._session_message(
            self.topics.session,
            "session_end",
            {"summary": summary, "pain_after": self.pain_after},
        )
        self.publisher.publish(
            self.topics.status, self.numberer.envelope("status", {"state": "idle"}), retain=True
        )


def default_db_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vm-feedback")) / "sessions.sqlite3"
