"""The session runner: device → pipeline → a list of outputs (feedback.outputs.base).

Per block the runner processes the samples, keeps the session's result, builds the station
status once, and offers what happened (events, reps, the block) to each output; `offer` never
blocks, so no output can stall the loop. Therapist commands arrive as typed values on the
`CommandBus` (feedback.control), the same from MQTT and from the dashboard. Which outputs a
station has is decided where it is composed (feedback.station), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from config.protocols import load_protocol, prescribed_reps
from config.settings import CalibrationSettings, Settings
from devices.base import Device
from feedback.calibration import CalibrationResult
from feedback.contraction_report import contraction_metrics
from feedback.control.bus import CommandBus
from feedback.control.commands import (
    Calibrate,
    ChangeBand,
    Command,
    EmergencyStop,
    Pain,
    PickProtocol,
    Rearm,
    Start,
    Stop,
)
from feedback.control.gate import Verdict
from feedback.outputs.base import (
    BlockDone,
    DeviceSummary,
    Item,
    Output,
    OutputFull,
    RepDone,
    SessionClosed,
    SessionEvent,
    SessionOpened,
    StationStatus,
)
from feedback.pipeline import Pipeline, Tick
from feedback.placement import session_montage
from feedback.processing.metrics import Contraction
from feedback.processing.offline_count import OfflineCounter
from feedback.profiles import profile_path, save_calibration
from feedback.rep_metrics import RepMetrics
from feedback.session_result import REPORT_CONTRACTIONS as REPORT_CONTRACTIONS
from feedback.session_result import SessionResult as SessionResult
from feedback.session_result import new_session_id
from feedback.stimulation.driver import StimDriver

log = logging.getLogger(__name__)


@runtime_checkable
class FollowsCalibration(Protocol):
    """A device whose patient can follow the calibration's prompts (the simulator does)."""

    def following_calibration(
        self, c: CalibrationSettings
    ) -> contextlib.AbstractContextManager[None]: ...


class MqttHealth(Protocol):
    """What the station status says about the MQTT link (MqttPublisher has it)."""

    @property
    def connected(self) -> bool: ...
    @property
    def backlog(self) -> int: ...


class Session:
    def __init__(
        self,
        settings: Settings,
        device: Device,
        outputs: Iterable[Output],
        *,
        duration_s: float | None,
        commands: CommandBus | None = None,
        mqtt: MqttHealth | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.outputs: list[Output] = list(outputs)
        self.duration_s = duration_s
        self.mqtt = mqtt
        self.session_id = new_session_id()
        self.result = SessionResult(self.session_id)
        self._reps_counted = settings.protocol.kind != "free"  # a timed protocol was followed
        self.result.reps = 0 if self._reps_counted else None
        self._offline: OfflineCounter | None = None
        self._last_onset_ms: float | None = None  # VM–VL onset difference, last contraction
        self.stim = StimDriver(settings, device, self.log_event)
        self.pipeline: Pipeline | None = None
        self.pain_before = settings.session.pain_before
        self.pain_after: int | None = None
        self.rep_metrics: RepMetrics | None = None
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._running = False
        self._early: list[Item] | None = []  # items offered before the session opened
        self._pending: set[asyncio.Future[Any]] = set()  # emergency stops and re-arms under way
        self._switch_source = ""  # who picked the pending protocol
        self._cal_script: contextlib.AbstractContextManager[None] | None = None
        # The one control interface: MQTT (through its gate) and the dashboard both submit here.
        self.commands = commands if commands is not None else CommandBus()
        self._obey(self.commands)

    def add_output(self, output: Output) -> None:
        """One more output, before `run` (a dashboard, a bench's listener)."""
        self.outputs.append(output)

    @property
    def stim_state(self) -> str:
        return self.stim.state

    # -- commands --------------------------------------------------------------------------
    def _obey(self, bus: CommandBus) -> None:
        bus.on(Start, self._on_start)
        bus.on(Stop, self._on_stop)
        bus.on(EmergencyStop, self._on_emergency_stop)
        bus.on(Rearm, lambda c: self._later(self.stim.rearm(c.source), c))
        bus.on(ChangeBand, self._on_band)
        bus.on(Pain, self._on_pain)
        bus.on(Calibrate, self._on_calibrate)
        bus.on(PickProtocol, self._on_pick)
        bus.on_error = self._control_failed

    def _on_start(self, cmd: Start) -> None:
        if cmd.pain_before is not None and not self._running:
            self.pain_before = cmd.pain_before
        self._started.set()

    def _on_stop(self, cmd: Stop) -> None:
        self.result.stopped_by = "dashboard_stop" if cmd.source == "dashboard" else "therapist_stop"
        if cmd.pain_after is not None:
            self.pain_after = cmd.pain_after
        self._stop.set()

    def _on_emergency_stop(self, cmd: EmergencyStop) -> None:
        # Latch stimulation, keep the session running (ending it is the separate `stop`). The
        # host latch is taken here, before the handler returns; only sending to the device
        # waits for a task. The driver logs the outcome (acknowledged, no ack, not sent).
        t0 = self.stim.latch(cmd.source)
        self._later(self.stim.send_estop(t0), cmd)

    def _on_band(self, cmd: ChangeBand) -> None:
        self.change_band(cmd.low_pct, cmd.high_pct, cmd.source)  # logs band_set or band_refused

    def _on_pain(self, cmd: Pain) -> None:
        self.pain_after = cmd.pain_after

    def _on_calibrate(self, cmd: Calibrate) -> None:
        self.log_event("calibrate_requested", {"source": cmd.source})
        self.calibrate()

    def _on_pick(self, cmd: PickProtocol) -> None:
        self.log_event("protocol_picked", {"name": cmd.name, "source": cmd.source})
        self.change_protocol(cmd.name, cmd.source)  # a refusal raises: control_failed

    def _later(self, work: Awaitable[Any], cmd: Command) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._pending.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._control_failed(cmd, t.exception())  # type: ignore[arg-type]

        task.add_done_callback(done)

    def _control_failed(self, cmd: Command, exc: BaseException) -> None:
        name = type(cmd).__name__
        detail = {"control": name, "source": cmd.source, "error": f"{type(exc).__name__}: {exc}"}
        self.log_event("control_failed", detail)

    async def wait_for_start(self, stop: asyncio.Event) -> None:
        """Until a therapist's `start` (or `stop` is set)."""
        waits = {asyncio.create_task(self._started.wait()), asyncio.create_task(stop.wait())}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()

    @property
    def running(self) -> bool:
        return self._running

    def change_band(self, low_pct: object, high_pct: object, source: str) -> bool:
        """A band change from any source, checked against the `[target]` constraints (the same
        as in the config file) before it acts; logged as `band_set` or `band_refused`."""
        try:
            target = self.settings.target.with_band(low_pct, high_pct)  # type: ignore[arg-type]
        except ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors())
            body = {"low_pct": str(low_pct), "high_pct": str(high_pct), "source": source}
            self.log_event("band_refused", {**body, "reason": reason[:300]})
            return False
        if self.pipeline is None:
            self.log_event("band_refused", {"source": source, "reason": "no session running"})
            return False
        self.pipeline.set_band(target.low_pct, target.high_pct)
        applied: dict[str, Any] = {"low_pct": target.low_pct, "high_pct": target.high_pct}
        self.log_event("band_set", {**applied, "source": source})
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
        """Calibrate now, during the session (Pipeline.start_calibration). A device whose
        patient can follow the prompts (the demo's simulator) does, as in `--calibrate`."""
        if self.pipeline is None:
            raise RuntimeError("no session running")
        if self.pipeline.calibrating:
            return
        self.pipeline.start_calibration()
        if isinstance(self.device, FollowsCalibration):
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
            self.log_event("calibration_rejected", {"warnings": result.warnings, "mvc_mv": mvc})
            return
        save_calibration(profile_path(self.settings), result)  # a small file, written atomically
        self.settings = result.apply(self.settings)
        self.result.calibration = {
            "calibrated": True,
            "source": "guided",
            "mvc_mv": {ch: round(v, 6) for ch, v in self.settings.calibration.mvc_mv.items()},
        }
        rest = {c: round(max(v, 0.0), 6) for c, v in result.rest_mean_mv.items()}
        self.log_event("calibration", {"mvc_mv": mvc, "rest_mv": rest, "source": "measured"})

    def _protocol_changed(self, tick: Tick) -> None:
        """A switch took effect in this tick: log it and restart the stimulation's periods."""
        assert tick.switched_at is not None
        self.stim.new_timeline()
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
        self.log_event("protocol_changed", detail)

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

    # -- to the outputs: all non-blocking --------------------------------------------------
    def log_event(self, kind: str, detail: dict[str, Any]) -> None:
        self._offer(SessionEvent(kind, detail, time.time()))

    def _offer(self, item: Item) -> None:
        if self._early is not None:
            # Before the session opens (a supervisor's report, a refused command while waiting
            # for `start`): held, then offered right after session_start, which comes first.
            self._early.append(item)
            return
        for out in self.outputs:
            try:
                out.offer(item)
            except OutputFull as exc:
                refused = self.result.outputs_refused
                n = refused[out.name] = refused.get(out.name, 0) + 1
                if n == 1 or n % 1000 == 0:  # said at once, then now and then, never per block
                    log.error("%s (%d items refused so far)", exc, n)

    def _status(self) -> StationStatus:
        """The station's links and stimulation, once per block, for every output."""
        stats, mqtt = self.device.stats, self.mqtt
        return StationStatus(
            link=stats.state.value,
            gaps=stats.gaps,
            protocol_errors=stats.protocol_errors,
            stim_state=self.stim.state,
            stim_bursts=self.stim.bursts,
            mqtt_up=mqtt is not None and mqtt.connected,
            mqtt_backlog=0 if mqtt is None else mqtt.backlog,
        )

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
        self._running = True
        self._start(pipeline)
        # The one edge back into processing (docs/stimulation.md): a burst's sample interval to
        # blank, so the stimulation artefact is never read as activation.
        self.stim.blank = pipeline.blanker.add
        stim_task = asyncio.create_task(self.stim.run())
        consume = asyncio.create_task(self._consume(pipeline))
        stoppers = {asyncio.create_task(stop.wait()), asyncio.create_task(self._stop.wait())}
        try:
            done, _ = await asyncio.wait({consume, *stoppers}, return_when=asyncio.FIRST_COMPLETED)
            if consume not in done and not self._stop.is_set():
                self.result.stopped_by = "signal"
        finally:
            # Also when run() itself is cancelled: the loop and the stimulation driver must not
            # outlive the session, and the cancellation goes on to the caller afterwards.
            consume.cancel()
            for task in stoppers:
                task.cancel()
            try:
                if self._pending:  # let a stop reach the device (and its outcome the log) first
                    await asyncio.gather(*self._pending, return_exceptions=True)
                (ended,) = await asyncio.gather(consume, return_exceptions=True)
            finally:
                # Whatever ended the loop (a device error included), the stimulation driver
                # stops its burst and the session is closed with its report and end time.
                await self._stop_stim(stim_task)
                if self._cal_script is not None:  # ended while calibrating: nothing is stored
                    self._cal_script.__exit__(None, None, None)
                self._finish()
                self._running = False
        if isinstance(ended, Exception):  # a device error ends the session and reaches the caller
            raise ended
        return self.result

    async def _stop_stim(self, stim_task: asyncio.Task[None]) -> None:
        stim_task.cancel()
        try:
            await stim_task
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the driver logs its own errors; this is the last resort
            log.exception("stimulation driver failed")
            self.log_event("stim_driver_error", {"error": f"{type(exc).__name__}: {exc}"})

    def _start(self, pipeline: Pipeline) -> None:
        s, info = self.settings, self.device.info
        device = DeviceSummary(
            spec=info.spec,
            kind=info.kind,
            rate_hz=info.rate_hz,
            channels=tuple(info.channels),
            firmware=info.firmware_version,
            serial=info.serial,
        )
        opened = SessionOpened(
            session_id=self.session_id,
            started_at=time.time(),
            settings=s,
            device=device,
            target=pipeline.target,
            group_delay_ms=pipeline.chain.group_delay_ms,
            reps_counted=self._reps_counted,
            reps_prescribed=prescribed_reps(s.protocol),
            pain_before=self.pain_before,
            montage=session_montage(s, info.channels),
        )
        early, self._early = self._early or [], None
        for item in (opened, *early):
            self._offer(item)

    async def _consume(self, pipeline: Pipeline) -> None:
        rate = self.device.info.rate_hz
        limit = None if self.duration_s is None else round(self.duration_s * rate)
        last_end: int | None = None
        async for block in self.device.blocks():
            if last_end is not None and block.first_index > last_end:
                missing = block.first_index - last_end
                self.log_event("gap", {"from_index": last_end, "missing": missing})
            last_end = block.end_index
            self.stim.take_device_events()  # to the interlocks, and described in the log
            tick = pipeline.process(block)
            if tick.switched_at is not None:
                self._protocol_changed(tick)
            if tick.calibrated is not None:
                self._calibrated(tick.calibrated)
            self.stim.on_tick(tick)
            self._block(tick, pipeline)
            if pipeline.exercise.finished:
                self.result.stopped_by = "protocol_complete"
                return
            if limit is not None and self.result.samples >= limit:
                return
        self.result.stopped_by = "device_ended"  # e.g. a replayed recording reached its end

    def _block(self, tick: Tick, pipeline: Pipeline) -> None:
        r = self.result
        block = tick.processed.block
        r.samples += block.n_samples
        r.blocks += 1
        r.compute_us.add(tick.compute_s * 1e6)
        ex = tick.exercise
        r.reps = ex.reps_done if self._reps_counted else None
        r.time_in_target_s = ex.in_band_s
        r.cues += len(tick.cues)
        if self._offline is not None:
            self._offline.add(block.first_index, tick.processed.envelope)
        counted = self._count(tick.contractions)
        free = pipeline.exercise.free
        reps = [] if self.rep_metrics is None else self.rep_metrics.update(tick, counting=not free)
        now = time.time()
        # The block first (its cues and live snapshot lead the MQTT queue; the LSL marker clock
        # knows the block's samples before a contraction or a rep names one of them), then
        # what it completed.
        done = BlockDone(tick, self._status(), self._reps_counted, free, self._last_onset_ms, now)
        self._offer(done)
        for metrics in counted:
            self.log_event("contraction", metrics)
        self._reps(reps)
        for raised in tick.band_raised:
            detail = {
                "low_pct": raised.low_pct,
                "high_pct": raised.high_pct,
                "from_index": raised.from_index,
                "after_rep": raised.after_rep,
            }
            self.log_event("band_raised", detail)

    def _reps(self, reps: list[dict[str, Any]]) -> None:
        """A rep's metrics, computed once (feedback.rep_metrics), to every output."""
        for metrics in reps:
            self._offer(RepDone(metrics, time.time()))

    def _count(self, counted: tuple[Contraction, ...] | list[Contraction]) -> list[dict[str, Any]]:
        """Into the result (and the last onset difference); their metrics, for the events."""
        out = []
        for c in counted:
            if c.vm_vl_onset_ms is not None:
                self._last_onset_ms = c.vm_vl_onset_ms
            metrics = contraction_metrics(c)
            self.result.contractions.append(metrics)
            self.result.contractions_total += 1
            out.append(metrics)
        return out

    def _finish(self) -> None:
        r = self.result
        r.duration_s = r.samples / self.device.info.rate_hz
        r.link = self.device.stats
        last: list[Contraction] = []
        if self.pipeline is not None:  # a contraction still going at the end counts
            last = self.pipeline.finish()
            for metrics in self._count(last):
                self.log_event("contraction", metrics)
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
        # Delivery counts belong to the station's JSON report only (docs/metrics.md): the MQTT
        # output adds the one count its end message can carry (messages_before_end).
        for key in ("mqtt_published", "mqtt_backlog_at_end", "outputs_refused"):
            del summary[key]
        self._offer(SessionClosed(summary, self.pain_after, time.time()))


def default_db_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vm-feedback")) / "sessions.sqlite3"
