"""The host's stimulation interlocks: every reason a burst may not start, or must stop now.

Pure: no I/O and no clock of its own; the caller passes `now_s` (host monotonic seconds) and what
it knows of the device (`LinkView`). The firmware checks its own caps again (defence in depth);
this layer refuses earlier, with a reason the session log and the therapist can read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from config.settings import StimulationLimits
from firmware_bridge import StimCommand


class Refusal(enum.StrEnum):
    """Why the host refused (or stopped) a burst. Checked in this order: safety first."""

    ESTOP_LATCHED = "estop_latched"
    LINK_DOWN = "link_down"
    STALE_DATA = "stale_data"
    NO_STATUS = "no_status"  # no device Status yet, so electrode contact is unknown
    NO_CONTACT = "no_contact"
    OVER_LIMIT = "over_limit"  # amplitude, pulse width, frequency or length beyond the caps
    SESSION_LIMIT = "session_limit"
    BUSY = "busy"
    TOO_SOON = "too_soon"
    FIRMWARE = "firmware"  # the firmware refused; the detail carries its reason
    NOT_SENT = "not_sent"  # the command could not be written (link down or lost while sending)
    NO_ACK = "no_ack"  # sent, but the firmware did not acknowledge it in time: stopped
    SESSION_ENDED = "session_ended"  # only ever a reason to stop
    CALIBRATING = "calibrating"  # a calibration runs mid-session: no burst, a running one stops


@dataclass(frozen=True, slots=True)
class LinkView:
    """What the host knows of the device at `now_s`."""

    link_up: bool
    last_data_s: float | None  # host monotonic time the newest samples arrived
    contact: tuple[bool, ...] | None  # from the newest device Status; None before the first


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Refusal
    detail: str = ""


class StimInterlock:
    """Safety state (e-stop latch, burst count, rest timer, running burst) and the checks on it.

    `channels` are the electrode channels whose contact is required: the stimulation channel and
    the EMG channel that triggers it (a burst triggered by a floating electrode is not assisted
    exercise).
    """

    def __init__(
        self, limits: StimulationLimits, stale_after_s: float, channels: tuple[int, ...]
    ) -> None:
        self.limits = limits
        self.stale_after_s = stale_after_s
        self.channels = channels
        self.estop_latched = False
        self.calibrating = False  # set by the driver from the exercise phase
        self.bursts = 0
        self.active_id: int | None = None
        self.active_until_s = -float("inf")
        self.rest_from_s = -float("inf")

    @property
    def active(self) -> bool:
        return self.active_id is not None

    # -- checks ---------------------------------------------------------------------------------

    def link_fault(self, link: LinkView, now_s: float) -> Verdict | None:
        """Faults that forbid a burst and stop a running one."""
        if self.estop_latched:
            return Verdict(Refusal.ESTOP_LATCHED)
        if self.calibrating:  # not a link fault, but it forbids and stops bursts the same way
            return Verdict(Refusal.CALIBRATING)
        if not link.link_up:
            return Verdict(Refusal.LINK_DOWN)
        if link.last_data_s is None or now_s - link.last_data_s > self.stale_after_s:
            age = "none yet" if link.last_data_s is None else f"{now_s - link.last_data_s:.3f} s"
            return Verdict(Refusal.STALE_DATA, f"newest samples: {age}")
        if link.contact is None:
            return Verdict(Refusal.NO_STATUS)
        off = [c for c in self.channels if c >= len(link.contact) or not link.contact[c]]
        if off:
            return Verdict(Refusal.NO_CONTACT, f"channels {off}")
        return None

    def check(self, cmd: StimCommand, link: LinkView, now_s: float) -> Verdict | None:
        """None when `cmd` may be sent now; otherwise the first reason it may not."""
        fault = self.link_fault(link, now_s)
        if fault is not None:
            return fault
        over = self.limits.violations(
            cmd.amplitude_ma, cmd.pulse_width_us, cmd.frequency_hz, cmd.burst_ms / 1000
        )
        if over:
            return Verdict(Refusal.OVER_LIMIT, "; ".join(over))
        if self.bursts >= self.limits.max_bursts_per_session:
            return Verdict(Refusal.SESSION_LIMIT, f"{self.bursts} bursts sent")
        self.expire(now_s)
        if self.active:
            return Verdict(Refusal.BUSY, f"burst {self.active_id} running")
        rested = now_s - self.rest_from_s
        if rested < self.limits.min_rest_s:
            return Verdict(Refusal.TOO_SOON, f"rested {rested:.2f} s of {self.limits.min_rest_s} s")
        return None

    # -- state changes --------------------------------------------------------------------------

    def started(self, cmd: StimCommand, now_s: float) -> None:
        self.bursts += 1  # counted when sent, so a lost ack can never lift the session cap
        self.active_id = cmd.command_id
        self.active_until_s = now_s + cmd.burst_ms / 1000
        self.rest_from_s = self.active_until_s

    def stopped(self, now_s: float) -> None:
        """The running burst ended early (abort, e-stop, firmware stop): rest counts from now."""
        if self.active:
            self.rest_from_s = min(self.rest_from_s, now_s)
        self.active_id = None

    def expire(self, now_s: float) -> bool:
        """Forget a burst whose planned end has passed; True when one did."""
        if self.active and now_s >= self.active_until_s:
            self.active_id = None
            return True
        return False
