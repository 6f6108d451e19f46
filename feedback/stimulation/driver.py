"""The async side of stimulation: feeds the pure controller, sends what it decides, logs it all.

Lives in the session's fan-out. `on_tick` is synchronous and never blocks (it only queues); the
`run` task sends queued commands, reads the device's replies and re-checks the interlocks every
`poll_s`, so stale data or a missing StimAck stops a burst even when no tick arrives. An
emergency stop does not queue: it latches the host interlock first, then is sent at once.

A send that fails (the link is down: `DeviceError`) never escapes: a burst whose command could
not be written is logged as refused (`not_sent`), any other command as `stim_send_failed`, and
the driver carries on. A burst is logged (`stim_burst`) only once its command was written; the
firmware's StimAck follows as `stim_ack`, and no ack within ACK_TIMEOUT_S aborts it (`no_ack`).

The driver sends no heartbeats: the device link feeds the firmware's watchdog only while the
processing loop keeps taking blocks (devices/link.py), so a hung loop lets the watchdog stop
the output.

Protocol v1 has no non-latching "stop burst" message, so an abort (stale data, lost contact,
link down, no ack, session end) is sent as EmergencyStop immediately followed by
EmergencyStopClear: the output stops at once and the firmware's rest timer runs from the stop.
A therapist's emergency stop is never cleared this way; it stays latched until `rearm`, and is
sent again whenever the link comes back while it is latched (a device that rebooted meanwhile
must not come back armed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from config.settings import Settings
from devices.base import Device, DeviceError, HostCommand, LinkState, describe_event
from feedback.exercise import Phase
from feedback.pipeline import Tick, resolve_target
from feedback.stimulation.controller import (
    Abort,
    BurstEnded,
    EStop,
    Fire,
    Rearm,
    Refused,
    StimAction,
    StimController,
    TickView,
)
from feedback.stimulation.interlock import LinkView, Refusal
from firmware_bridge import EmergencyStop, EmergencyStopClear, Status

log = logging.getLogger(__name__)

EventLog = Callable[[str, dict[str, Any]], None]
ESTOP_ACK_TIMEOUT_S = 0.5
Outgoing = HostCommand | Fire  # a Fire is logged as a burst only once its command is written


class StimChannelError(ValueError):
    """`stim_burst.channel` names an electrode channel the device does not have: refused before
    the session starts (exit 2), not found out burst by burst as missing contact."""


def check_stim_channel(settings: Settings, channels: tuple[str, ...]) -> None:
    """Raise StimChannelError when stimulation is on and its channel is not on the device
    (nothing to check while the device's channels are still unknown)."""
    ch = settings.stim_burst.channel
    if settings.stimulation.enabled and channels and ch >= len(channels):
        names = ", ".join(f"{i} {name}" for i, name in enumerate(channels))
        raise StimChannelError(
            f"stim_burst.channel = {ch}: this device has no channel {ch} "
            f"(its channels: {names}); set stim_burst.channel to one of them"
        )


class StimDriver:
    def __init__(
        self,
        settings: Settings,
        device: Device,
        event_log: EventLog,
        *,
        poll_s: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = settings.target.channel
        self._side = settings.session.side
        # A serial or BLE device learns its channels on connect; until then (and until the first
        # tick confirms it) contact is required on the stimulation channel alone.
        channels = device.info.channels
        check_stim_channel(settings, channels)
        self._settings = settings
        self._sense_known = self._resolve(channels)
        sense = channels.index(self.target) if self._sense_known else settings.stim_burst.channel
        self.controller = StimController(settings.stimulation, settings.stim_burst, sense)
        self.device = device
        self.event_log = event_log
        self.poll_s = poll_s
        self.clock = clock
        self.blank: Callable[[int, int], None] = lambda start, end: None
        self.last_data_s: float | None = None
        self.estop_latency_s: list[float] = []
        # Groups of commands sent in order; a group is abandoned at its first failed send, so
        # an abort's EmergencyStopClear never goes out without its EmergencyStop.
        self._outbox: collections.deque[tuple[Outgoing, ...]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._status: Status | None = None  # newest device Status: electrode contact
        self._reconnects_seen = device.stats.reconnects
        self._last_error = ""

    def _resolve(self, channels: tuple[str, ...]) -> bool:
        """Settle the target on the device's channel names (`VM` is `VM_R` on a bilateral
        device trained on the right, as in the pipeline); False while they are unknown."""
        try:
            self.target = resolve_target(self.target, self._side, channels)
        except ValueError:
            return False
        return True

    @property
    def state(self) -> str:
        return self.controller.state

    def blank_with(self, blank: Callable[[int, int], None]) -> None:
        """Where each burst's sample interval goes to be blanked (the pipeline's blanker), so
        the stimulation artefact is never read as activation."""
        self.blank = blank

    def new_timeline(self) -> None:
        """A protocol switch took effect: the stimulation's periods restart with it."""
        self.controller.new_timeline()

    @property
    def bursts(self) -> int:
        """Bursts started this session (the interlock's count), for the station status."""
        return self.controller.interlock.bursts

    def link_view(self) -> LinkView:
        status = self._status
        return LinkView(
            link_up=self.device.stats.state is LinkState.UP,
            last_data_s=self.last_data_s,
            contact=None if status is None else status.contact_ok,
        )

    # -- synchronous, from the processing loop ---------------------------------------------

    def on_tick(self, tick: Tick) -> None:
        now = self.clock()
        self.last_data_s = now
        if not self._sense_known:
            self._sense_known = self._resolve(tick.processed.block.channels)
            sense = tick.processed.block.channels.index(self.target)
            self.controller.set_sense_channel(sense)
            self._check_late(tick.processed.block.channels)
        ex = tick.exercise
        self.controller.interlock.calibrating = ex.phase is Phase.CALIBRATING
        view = TickView(
            working=ex.phase is Phase.WORK,
            period=ex.period,
            activation_pct=tick.pct_mvc[self.target],
            band_low_pct=tick.band[0],
            end_index=tick.processed.block.end_index,
            rate_hz=tick.processed.block.rate_hz,
        )
        self._apply(self.controller.on_tick(view, self.link_view(), now))

    def _check_late(self, channels: tuple[str, ...]) -> None:
        """A device that told its channels only now (serial, BLE) and lacks the stimulation
        channel: no burst can be right, so stimulation is latched off and the reason logged."""
        try:
            check_stim_channel(self._settings, channels)
        except StimChannelError as exc:
            self.event_log("stim_driver_error", {"error": str(exc)[:300]})
            self._apply(self.controller.emergency_stop("missing_channel", self.clock()))

    def _apply(self, actions: list[StimAction]) -> None:
        for action in actions:
            if isinstance(action, Fire):
                # Blank from the decision: the block after it may be processed before the send.
                self.blank(action.blank_from, action.blank_to)
                self._queue(action)
            elif isinstance(action, Refused) and action.verdict.reason is not Refusal.FIRMWARE:
                # (a firmware refusal is already in the log, described from the device event)
                v = action.verdict
                body = {"reason": v.reason.value, "detail": v.detail, "period": action.period}
                self.event_log("stim_refused", body)
            elif isinstance(action, Abort):
                self._drop_unsent_bursts()
                self._queue(EmergencyStop(), EmergencyStopClear())
                v = action.verdict
                self.event_log("stim_abort", {"reason": v.reason.value, "detail": v.detail})
            elif isinstance(action, BurstEnded):
                self.event_log("stim_end", {"command_id": action.command_id, "how": action.how})
            elif isinstance(action, EStop):
                self.event_log("stim_estop", {"source": action.source})
            elif isinstance(action, Rearm):
                self.event_log("stim_rearm", {"source": action.source})

    def _queue(self, *commands: Outgoing) -> None:
        self._outbox.append(commands)
        self._wakeup.set()

    def _drop_unsent_bursts(self) -> None:
        """A burst stopped before its command went out must not go out afterwards."""
        kept = [g for g in self._outbox if not any(isinstance(c, Fire) for c in g)]
        self._outbox = collections.deque(kept)

    def _log_burst(self, action: Fire) -> None:
        c = action.command
        self.event_log(
            "stim_burst",
            {
                "command_id": c.command_id,
                "channel": c.channel,
                "amplitude_ma": c.amplitude_ma,
                "pulse_width_us": c.pulse_width_us,
                "frequency_hz": c.frequency_hz,
                "ramp_up_ms": c.ramp_up_ms,
                "hold_ms": c.hold_ms,
                "ramp_down_ms": c.ramp_down_ms,
                "blank_from": action.blank_from,
                "blank_to": action.blank_to,
                "burst": self.controller.interlock.bursts,
            },
        )

    # -- asynchronous -----------------------------------------------------------------------

    async def _send(self, item: Outgoing) -> bool:
        """Write one command; a failure is logged, never raised. True when written."""
        command = item.command if isinstance(item, Fire) else item
        try:
            await self.device.send(command)
        except DeviceError as exc:
            if isinstance(item, Fire):
                cid = item.command.command_id
                self._apply(self.controller.not_sent(cid, self.clock(), str(exc)))
            else:
                body = {"command": type(command).__name__, "error": str(exc)}
                self.event_log("stim_send_failed", body)
            return False
        if isinstance(item, Fire):
            self.controller.sent(item.command.command_id, self.clock())
            self._log_burst(item)
        return True

    async def emergency_stop(self, source: str) -> float | None:
        """Latch, then stop the device. Returns the seconds until the firmware acknowledged
        (None: not sent, or no ack within ESTOP_ACK_TIMEOUT_S). The host latch holds from the
        first line on, whatever the device does; every outcome is logged."""
        return await self.send_estop(self.latch(source))

    def latch(self, source: str) -> float:
        """The host half of an emergency stop, synchronous so that a caller outside a task
        (a command handler) latches before it returns: no burst may start from here on.
        Returns the start time that `send_estop` measures the acknowledgement from."""
        t0 = time.perf_counter()
        self._apply(self.controller.emergency_stop(source, self.clock()))
        self._outbox.clear()  # nothing queued before the stop may go out after it
        return t0

    async def send_estop(self, t0: float) -> float | None:
        """The device half: send EmergencyStop and wait for its acknowledgement."""
        acks = self.controller.estop_acks
        try:
            await self.device.send(EmergencyStop())
        except DeviceError as exc:
            self.event_log("stim_estop_not_sent", {"error": str(exc)})
            return None
        while time.perf_counter() - t0 < ESTOP_ACK_TIMEOUT_S:
            self.take_device_events()
            if self.controller.estop_acks > acks:
                latency = time.perf_counter() - t0
                self.estop_latency_s.append(latency)
                self.event_log("stim_estop_ack", {"latency_ms": round(latency * 1000, 3)})
                return latency
            await asyncio.sleep(0.0005)
        self.event_log("stim_estop_no_ack", {"timeout_s": ESTOP_ACK_TIMEOUT_S})
        return None

    async def rearm(self, source: str) -> bool:
        """Clear the latch on the device, then on the host: if EmergencyStopClear cannot be
        sent, both stay latched (logged). True when re-armed."""
        if not self.controller.interlock.estop_latched:
            return False
        if not await self._send(EmergencyStopClear()):
            return False
        self._apply(self.controller.rearm(source, self.clock()))
        return True

    def take_device_events(self) -> None:
        """The one consumer of `device.take_events()`: each event goes to the interlocks and,
        when it is more than chatter, into the session log."""
        now = self.clock()
        for event in self.device.take_events():
            if isinstance(event.message, Status):
                self._status = event.message
            described = describe_event(event)
            if described is not None:
                self.event_log(*described)
            self._apply(self.controller.on_device(event.message, now))

    async def _send_queued(self) -> None:
        while self._outbox:
            for item in self._outbox.popleft():
                if not await self._send(item):
                    break

    async def _after_reconnect(self) -> None:
        """A latched e-stop is sent again to a device that (re)connected."""
        reconnects = self.device.stats.reconnects
        if reconnects == self._reconnects_seen or self.device.stats.state is not LinkState.UP:
            return
        self._reconnects_seen = reconnects
        if self.controller.interlock.estop_latched:
            self.event_log("stim_estop", {"source": "reconnect"})
            await self.send_estop(time.perf_counter())

    async def step(self) -> None:
        """One round: replies in, interlocks re-checked, commands out."""
        self.take_device_events()
        await self._after_reconnect()
        self._apply(self.controller.check(self.link_view(), self.clock()))
        await self._send_queued()

    async def run(self) -> None:
        """Runs until cancelled; on the way out stops a burst that is still on. An unexpected
        error in a round is logged (once per distinct message) and the rounds go on: the
        interlocks must keep running for as long as the session does."""
        try:
            while True:
                try:
                    await self.step()
                except Exception as exc:
                    self._report_error(exc)
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_s)
        finally:
            self._apply(self.controller.shutdown(self.clock()))
            with contextlib.suppress(Exception):
                await asyncio.shield(self._send_queued())

    def _report_error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last_error:
            self._last_error = text
            log.exception("stimulation driver round failed")
            self.event_log("stim_driver_error", {"error": text})
