"""EMG-triggered stimulation: when to fire a burst, when to stop one, and what to log.

Pure and synchronous, like processing: the driver (feedback.stimulation.driver) feeds it ticks,
device messages and the clock, and carries out the actions it returns. Every decision is an
action, so every burst, refusal, abort and emergency stop reaches the session log with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import StimBurstSettings, StimulationLimits
from feedback.stimulation.interlock import LinkView, Refusal, StimInterlock, Verdict
from firmware_bridge import EmergencyStopAck, Status, StimAck, StimCommand, StimRefused, StimState


@dataclass(frozen=True, slots=True)
class TickView:
    """The part of a pipeline Tick the controller decides on."""

    working: bool  # in a work period
    period: int  # 1-based work period number
    activation_pct: float  # target channel % MVC at the block end (held while blanked)
    band_low_pct: float
    end_index: int  # sample index after the block's last sample
    rate_hz: float


@dataclass(frozen=True, slots=True)
class Fire:
    """Send `command`; blank EMG samples [blank_from, blank_to) against the artefact."""

    command: StimCommand
    blank_from: int
    blank_to: int


@dataclass(frozen=True, slots=True)
class Refused:
    verdict: Verdict
    period: int


@dataclass(frozen=True, slots=True)
class Abort:
    """Stop the running burst now (sent as EmergencyStop then EmergencyStopClear)."""

    verdict: Verdict


@dataclass(frozen=True, slots=True)
class EStop:
    """Send EmergencyStop; the latch holds until a therapist re-arms."""

    source: str


@dataclass(frozen=True, slots=True)
class Rearm:
    source: str


@dataclass(frozen=True, slots=True)
class BurstEnded:
    command_id: int
    how: str  # "completed" | "watchdog" | "no_contact" | "estop"


StimAction = Fire | Refused | Abort | EStop | Rearm | BurstEnded

# A StimCommand the firmware has not acknowledged this long after it was written is treated as
# failed and stopped: a burst the host cannot confirm must not be assumed to run as planned.
ACK_TIMEOUT_S = 0.2


class StimController:
    def __init__(
        self,
        limits: StimulationLimits,
        burst: StimBurstSettings,
        sense_channel: int,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self.limits = limits
        self.burst = burst
        channels = tuple(sorted({burst.channel, sense_channel}))
        self.interlock = StimInterlock(limits, burst.stale_after_s, channels)
        self._next_id = 1
        self._fired_period = 0
        self._refused: set[tuple[int, Refusal]] = set()  # one log line per reason per period
        self.estop_acks = 0
        self.ack_timeout_s = ack_timeout_s
        # (command_id, deadline): from the decision to fire until the StimAck; `sent` restarts
        # the deadline from the write, so a command stuck in the driver's queue also times out.
        self._ack_due: tuple[int, float] | None = None
        self._written = False

    def set_sense_channel(self, sense_channel: int) -> None:
        """The EMG channel that triggers bursts (its contact is required too)."""
        self.interlock.channels = tuple(sorted({self.burst.channel, sense_channel}))

    def new_timeline(self) -> None:
        """A protocol switched mid-session restarts the work period numbers at 1: each new
        period may fire (and log a refusal) once again."""
        self._fired_period = 0
        self._refused.clear()

    @property
    def state(self) -> str:
        """One word for the dashboard: off | estop | stimulating | armed."""
        if self.interlock.estop_latched:
            return "estop"
        if not self.limits.enabled:
            return "off"
        return "stimulating" if self.interlock.active else "armed"

    def command(self) -> StimCommand:
        b = self.burst
        return StimCommand(
            command_id=self._next_id,
            channel=b.channel,
            amplitude_ma=b.amplitude_ma,
            pulse_width_us=b.pulse_width_us,
            frequency_hz=b.frequency_hz,
            ramp_up_ms=round(b.ramp_up_s * 1000),
            hold_ms=round(b.hold_s * 1000),
            ramp_down_ms=round(b.ramp_down_s * 1000),
        )

    # -- inputs ---------------------------------------------------------------------------------

    def on_tick(self, tick: TickView, link: LinkView, now_s: float) -> list[StimAction]:
        actions = self.check(link, now_s)
        if not self.limits.enabled or not tick.working or tick.period == self._fired_period:
            return actions
        if tick.activation_pct < self.burst.trigger_fraction * tick.band_low_pct:
            return actions
        return actions + self.request(self.command(), tick, link, now_s)

    def request(
        self, cmd: StimCommand, tick: TickView, link: LinkView, now_s: float
    ) -> list[StimAction]:
        """Fire `cmd` if every interlock passes, else a (de-duplicated) refusal."""
        verdict = self.interlock.check(cmd, link, now_s)
        if verdict is not None:
            key = (tick.period, verdict.reason)
            if key in self._refused:
                return []
            self._refused.add(key)
            return [Refused(verdict, tick.period)]
        self._next_id += 1
        self._fired_period = tick.period
        self.interlock.started(cmd, now_s)
        self._ack_due, self._written = (cmd.command_id, now_s + self.ack_timeout_s), False
        span = round((cmd.burst_ms + self.burst.blank_margin_ms) * tick.rate_hz / 1000)
        return [Fire(cmd, tick.end_index, tick.end_index + span)]

    def sent(self, command_id: int, now_s: float) -> None:
        """The driver wrote the command: from now its StimAck is due within `ack_timeout_s`."""
        if self.interlock.active_id == command_id:
            self._ack_due, self._written = (command_id, now_s + self.ack_timeout_s), True

    def not_sent(self, command_id: int, now_s: float, detail: str) -> list[StimAction]:
        """Writing the command failed: the burst never started (it still counts towards the
        session cap, since a write that failed half-way may have reached the device)."""
        if self.interlock.active_id == command_id:
            self._ack_due = None
            self.interlock.stopped(now_s)
        return [Refused(Verdict(Refusal.NOT_SENT, detail), self._fired_period)]

    def check(self, link: LinkView, now_s: float) -> list[StimAction]:
        """Periodic: stop a running burst on a link fault (stale data, contact, link down) or
        when the firmware never acknowledged it."""
        il = self.interlock
        active_id = il.active_id
        if active_id is None:
            return []
        due = self._ack_due
        if due is not None and due[0] == active_id and now_s > due[1]:
            self._ack_due = None
            il.stopped(now_s)
            ms = round(self.ack_timeout_s * 1000)
            what = "no StimAck" if self._written else "not written"
            return [Abort(Verdict(Refusal.NO_ACK, f"command {active_id}: {what} in {ms} ms"))]
        if il.expire(now_s):
            return [BurstEnded(active_id, "completed")]
        fault = il.link_fault(link, now_s)
        if fault is None or fault.reason is Refusal.ESTOP_LATCHED:
            return []  # an e-stop has already stopped the output
        il.stopped(now_s)
        return [Abort(fault)]

    def on_device(self, message: object, now_s: float) -> list[StimAction]:
        """Replies and status from the firmware."""
        il = self.interlock
        if isinstance(message, EmergencyStopAck):
            self.estop_acks += 1
        elif isinstance(message, StimRefused) and message.command_id == il.active_id:
            self._ack_due = None
            il.stopped(now_s)
            detail = f"command {message.command_id}: {message.reason.name}"
            return [Refused(Verdict(Refusal.FIRMWARE, detail), self._fired_period)]
        elif isinstance(message, StimAck):
            if self._ack_due is not None and self._ack_due[0] == message.command_id:
                self._ack_due = None  # started as planned; the plan already counts it
        elif isinstance(message, Status) and il.active_id is not None:
            return self._status(message, il.active_id, now_s)
        return []

    def _status(self, status: Status, active_id: int, now_s: float) -> list[StimAction]:
        if status.stim_state is StimState.STOPPED_WATCHDOG:
            self.interlock.stopped(now_s)
            return [BurstEnded(active_id, "watchdog")]
        ch = self.burst.channel
        if ch < len(status.contact_ok) and not status.contact_ok[ch]:
            self.interlock.stopped(now_s)  # the firmware stops on contact loss by itself
            return [BurstEnded(active_id, "no_contact")]
        return []

    def shutdown(self, now_s: float) -> list[StimAction]:
        """The session is ending: stop a burst that is still running."""
        if self.interlock.active_id is None or self.interlock.expire(now_s):
            return []
        self.interlock.stopped(now_s)
        return [] if self.interlock.estop_latched else [Abort(Verdict(Refusal.SESSION_ENDED))]

    def emergency_stop(self, source: str, now_s: float) -> list[StimAction]:
        il = self.interlock
        was = il.active_id
        il.estop_latched = True
        il.stopped(now_s)
        ended = [] if was is None else [BurstEnded(was, "estop")]
        return [EStop(source), *ended]

    def rearm(self, source: str, now_s: float) -> list[StimAction]:
        """Clear the e-stop latch (an explicit therapist action; never automatic)."""
        if not self.interlock.estop_latched:
            return []
        self.interlock.estop_latched = False
        self.interlock.rest_from_s = now_s  # a full rest before the first burst after re-arming
        return [Rearm(source)]
