"""The session runner: device → pipeline → a list of outputs (feedback.outputs.base).

Per block the runner processes the samples up to their cues and offers those at once (a cue's
latency is the product), then the rest of the block: it keeps the session's result, builds the
station status once, and offers what happened (events, reps, the block) to each output;
`offer` never blocks, so no output can stall the loop. Therapist commands arrive as typed
values on the `CommandBus` (feedback.control), the same from MQTT and from the dashboard. Which
outputs a station has is decided where it is composed (feedback.station), not here. What a
command does, band and protocol changes, a mid-session calibration and the result's
bookkeeping are parts it composes: feedback.session_commands, .prescription, .calibration_live
and .session_tally.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from config.protocols import prescribed_reps
from config.settings import Settings
from devices.base import Device
from feedback.calibration_live import LiveCalibration
from feedback.control.bus import CommandBus
from feedback.control.gate import Verdict
from feedback.outputs.base import (
    BlockDone,
    CuesDue,
    DeviceSummary,
    Item,
    MqttHealth,
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
from feedback.prescription import Prescription
from feedback.session_commands import TherapistControl, verdict_detail
from feedback.session_result import REPORT_CONTRACTIONS as REPORT_CONTRACTIONS
from feedback.session_result import SessionResult as SessionResult
from feedback.session_result import new_session_id
from feedback.session_tally import Metrics, Tally
from feedback.stimulation.driver import StimDriver

log = logging.getLogger(__name__)


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
        self.tally = Tally(self.result, settings)
        self.stim = StimDriver(settings, device, self.log_event)
        self.pipeline: Pipeline | None = None
        self.prescription = Prescription(settings.target, self.log_event)
        self.calibration = LiveCalibration(device, self.log_event)
        self._stop = asyncio.Event()
        self._running = False
        self._early: list[Item] | None = []  # items offered before the session opened
        # The one control interface: MQTT (through its gate) and the dashboard both submit here.
        self.commands = commands if commands is not None else CommandBus()
        self.control = TherapistControl(
            self.commands,
            self.log_event,
            stim=self.stim,
            prescription=self.prescription,
            calibrate=lambda: self.calibration.start(self.settings),  # settings as of then
            stop=self._stop_by,
            pain_before=settings.session.pain_before,
        )

    def add_output(self, output: Output) -> None:
        """One more output, before `run` (a dashboard, a bench's listener)."""
        self.outputs.append(output)

    @property
    def stim_state(self) -> str:
        return self.stim.state

    @property
    def running(self) -> bool:
        return self._running

    async def wait_for_start(self, stop: asyncio.Event) -> None:
        """Until a therapist's `start` (or `stop` is set)."""
        await self.control.wait_for_start(stop)

    def record_command(self, verdict: Verdict) -> None:
        """Every command verdict goes into the session's events, accepted or refused."""
        self.log_event("command_result", verdict_detail(verdict))

    def _stop_by(self, who: str) -> None:
        self.result.stopped_by = who
        self._stop.set()

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
        stim = self.stim
        return StationStatus.of(self.device.stats, stim.state, stim.bursts, self.mqtt)

    # -- the loop --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> SessionResult:
        info = self.device.info
        pipeline = self.pipeline = Pipeline(self.settings, info.rate_hz, info.channels)
        self.tally.begin(self.settings, info, pipeline)
        self.prescription.attach(pipeline)
        self.calibration.attach(pipeline)
        self._running = True
        self._start(pipeline)
        # The one edge back into processing (docs/stimulation.md): a burst's sample interval to
        # blank, so the stimulation artefact is never read as activation.
        self.stim.blank_with(pipeline.blanker.add)
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
                await self.control.settle()  # a stop reaches the device (and the log) first
                (ended,) = await asyncio.gather(consume, return_exceptions=True)
            finally:
                # Whatever ended the loop (a device error included), the stimulation driver
                # stops its burst and the session is closed with its report and end time.
                await self._stop_stim(stim_task)
                self.calibration.close()  # ended while calibrating: nothing is stored
                self._finish(pipeline)
                self._running = False
                self.control.session_closed()
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
        self.control.session_opened()
        opened = SessionOpened(
            session_id=self.session_id,
            started_at=time.time(),
            settings=s,
            device=DeviceSummary.of(info),
            target=pipeline.target,
            group_delay_ms=pipeline.chain.group_delay_ms,
            reps_counted=self.tally.reps_counted,
            reps_prescribed=prescribed_reps(s.protocol),
            pain_before=self.control.pain_before,
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
            step = pipeline.cue_step(block)
            if step.cues:  # to the patient first: the rest of the block's work comes after
                cues = CuesDue(step.cues, step.exercise, step.band, step.reps_total, time.time())
                self._offer(cues)
            tick = pipeline.complete(step)
            if tick.switched_at is not None:  # a picked protocol took over in this block
                self.stim.new_timeline()  # the stimulation's periods restart with it
                self.tally.protocol_switched(pipeline)
                self.prescription.took_effect(tick)
            if tick.calibrated is not None:
                self._calibrated(tick)
            self.stim.on_tick(tick)
            self._block(tick, pipeline)
            if pipeline.exercise.finished:
                self.result.stopped_by = "protocol_complete"
                return
            if limit is not None and self.result.samples >= limit:
                return
        self.result.stopped_by = "device_ended"  # e.g. a replayed recording reached its end

    def _calibrated(self, tick: Tick) -> None:
        assert tick.calibrated is not None
        stored = self.calibration.ended(tick.calibrated, self.settings)
        if stored is not None:
            self.settings = stored
            self.tally.calibrated(stored)

    def _block(self, tick: Tick, pipeline: Pipeline) -> None:
        free = pipeline.exercise.free
        counted, reps = self.tally.block(tick, free=free)
        t = self.tally
        # The block first (its live snapshot leads the MQTT queue; the LSL marker clock
        # knows the block's samples before a contraction or a rep names one of them), then
        # what it completed.
        now = time.time()
        self._offer(BlockDone(tick, self._status(), t.reps_counted, free, t.last_onset_ms, now))
        self._completed(counted, reps)
        self.prescription.raised(tick)  # the progression's decisions, after what they followed

    def _completed(self, contractions: Metrics, reps: Metrics) -> None:
        """Each contraction an event; a rep's metrics, computed once, to every output."""
        for metrics in contractions:
            self.log_event("contraction", metrics)
        for metrics in reps:
            self._offer(RepDone(metrics, time.time()))

    def _finish(self, pipeline: Pipeline) -> None:
        r = self.result
        r.duration_s = r.samples / self.device.info.rate_hz
        r.link = self.device.stats
        self._completed(*self.tally.finish(pipeline.finish()))  # a contraction still going counts
        summary = r.report()
        # Delivery counts belong to the station's JSON report only (docs/metrics.md): the MQTT
        # output adds the one count its end message can carry (messages_before_end).
        for key in ("mqtt_published", "mqtt_backlog_at_end", "outputs_refused"):
            del summary[key]
        self._offer(SessionClosed(summary, self.control.pain_after, time.time()))


def default_db_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vm-feedback")) / "sessions.sqlite3"
