"""The device side of the protocol, emulated, sans-I/O: for tests, the simulator and the pty runner.

It behaves as the real firmware must, including the parts that exist for safety and do not trust
the host: its own hard limits (refused with a reason, whatever the host's config says), electrode
contact checks, a latched emergency stop, and a watchdog that stops stimulation when the host
goes quiet. Time is whatever the caller passes as `now_s`, so tests can step it exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .connection import Connection, ConnectionStats, ProtocolErrorEvent, Role
from .frames import (
    DeviceInfo,
    EmergencyStop,
    EmergencyStopAck,
    EmergencyStopClear,
    Heartbeat,
    InfoRequest,
    Message,
    RefusalReason,
    SampleFrame,
    Status,
    StimAck,
    StimCommand,
    StimRefused,
    StimState,
)
from .framing import MAX_FRAME_SIZE, MIN_FRAME_SIZE

__all__ = ["EmulatedFirmware", "FirmwareLimits", "FirmwareStats", "SignalSource"]

SignalSource = Callable[[int], np.ndarray]
"""`source(n)` returns the next n samples, shape (n_channels, n), float millivolts."""

STATUS_INTERVAL_S = 0.5
_TIME_EPS_MS = 1e-6  # float seconds: 1.4 - 0.4 is 0.99999...; a real MCU counts integer ticks
_SAMPLE_HEADER = 14  # sample_counter u32, device_time_us u64, n_channels u8, n_samples u8


@dataclass(frozen=True, slots=True)
class FirmwareLimits:
    """The firmware's own hard caps, checked on every StimCommand regardless of the host."""

    max_amplitude_ma: float = 60.0
    max_pulse_width_us: int = 400
    min_frequency_hz: int = 1
    max_frequency_hz: int = 100
    max_burst_ms: int = 10_000  # ramp up + hold + ramp down
    min_rest_ms: int = 1_000  # from the end (or stop) of one burst to the start of the next


@dataclass(slots=True)
class FirmwareStats:
    frames_sent: int = 0
    samples_sent: int = 0
    samples_clipped: int = 0  # saturated at the ADC range: the host sees a flat top
    status_sent: int = 0
    commands_accepted: int = 0
    commands_refused: int = 0
    estops: int = 0
    watchdog_trips: int = 0


@dataclass(frozen=True, slots=True)
class _Burst:
    command: StimCommand
    start_s: float

    def phase_ends(self) -> list[tuple[float, StimState]]:
        """(end time, state) of each non-empty phase, in order."""
        c, t, out = self.command, self.start_s, []
        for ms, state in (
            (c.ramp_up_ms, StimState.RAMP_UP),
            (c.hold_ms, StimState.HOLD),
            (c.ramp_down_ms, StimState.RAMP_DOWN),
        ):
            if ms > 0:
                t += ms / 1000
                out.append((t, state))
        return out

    @property
    def end_s(self) -> float:
        return self.start_s + self.command.burst_ms / 1000


class EmulatedFirmware:
    def __init__(
        self,
        info: DeviceInfo,
        source: SignalSource,
        limits: FirmwareLimits = FirmwareLimits(),  # frozen, so one shared default is safe
        samples_per_frame: int = 20,
        watchdog_s: float = 0.25,
        *,
        start_counter: int = 0,
        battery_pct: int = 100,
    ) -> None:
        frame_bytes = MIN_FRAME_SIZE + _SAMPLE_HEADER + 2 * info.n_channels * samples_per_frame
        if not 1 <= samples_per_frame <= 255 or frame_bytes > MAX_FRAME_SIZE:
            raise ValueError(
                f"{samples_per_frame} samples x {info.n_channels} channels per frame "
                f"does not fit a {MAX_FRAME_SIZE}-byte frame"
            )
        if not 2 <= info.adc_bits <= 16:
            raise ValueError(f"adc_bits must be 2..16 for int16 samples, got {info.adc_bits}")
        self.info = info
        self.limits = limits
        self.samples_per_frame = samples_per_frame
        self.watchdog_s = watchdog_s
        self.battery_pct = battery_pct
        self.stats = FirmwareStats()
        self._source = source
        self._conn = Connection(Role.DEVICE)
        self._scale = 1e6 / info.lsb_nv  # mV -> counts
        self._adc_max = (1 << (info.adc_bits - 1)) - 1
        self._pending = np.zeros((info.n_channels, 0), dtype=np.int16)
        self._samples_done = 0  # samples framed so far; drives the device clock
        self._start_counter = start_counter
        self._contact = [True] * info.n_channels
        self._state = StimState.IDLE
        self._burst: _Burst | None = None
        self._phase = 0  # index into the burst's phase_ends()
        self._estop_latched = False
        self._rest_from_s = -float("inf")  # when the last burst ended or was stopped
        self._last_host_rx_s = -float("inf")
        self._now_s = -float("inf")
        self._last_status = self._current_status()  # "changed" is relative to power-on
        self._last_status_s = -float("inf")

    # -- public surface -------------------------------------------------------------------------

    @property
    def stim_state(self) -> StimState:
        return self._state

    @property
    def output_ma(self) -> float:
        """Stimulation amplitude at the last tick: follows the ramps, 0 when not stimulating."""
        b = self._burst
        if b is None or not self._state.stimulating:
            return 0.0
        c, elapsed_ms = b.command, (self._now_s - b.start_s) * 1000
        if self._state is StimState.RAMP_UP:
            return c.amplitude_ma * elapsed_ms / c.ramp_up_ms
        if self._state is StimState.RAMP_DOWN:
            return c.amplitude_ma * (c.burst_ms - elapsed_ms) / c.ramp_down_ms
        return c.amplitude_ma

    @property
    def source(self) -> SignalSource:
        """Where the samples come from (the synthetic EMG script, for the simulator)."""
        return self._source

    @property
    def link_stats(self) -> ConnectionStats:
        """Protocol counters for what the host sent (CRC errors and so on)."""
        return self._conn.stats

    @property
    def contact(self) -> tuple[bool, ...]:
        return tuple(self._contact)

    @property
    def estop_latched(self) -> bool:
        return self._estop_latched

    def set_contact(self, channel: int, ok: bool) -> None:
        """Electrode contact on `channel` (tests). Losing it mid-burst stops that burst."""
        self._contact[channel] = ok

    def hello(self) -> bytes:
        """DeviceInfo, as sent on connect."""
        return self._send(self.info)

    def receive_data(self, data: bytes, now_s: float) -> bytes:
        """Bytes from the host; returns the reply bytes (acks, refusals, echoes, status)."""
        out = self._tick(now_s)  # the watchdog may have expired before these bytes arrived
        self._conn.receive_data(data)
        for event in self._conn.events():
            if isinstance(event, ProtocolErrorEvent):
                continue  # counted in link_stats; garbage must not feed the watchdog
            self._last_host_rx_s = now_s
            out += self._handle(event, now_s)
        return out + self._status_if_changed(now_s)

    def advance(self, n_samples: int, now_s: float) -> bytes:
        """Acquire `n_samples` more samples at `now_s`; returns whole SampleFrames (the remainder
        waits for the next call), plus Status frames as the state machine moves."""
        out = self._tick(now_s)
        if n_samples > 0:
            self._acquire(n_samples)
        while self._pending.shape[1] >= self.samples_per_frame:
            block = self._pending[:, : self.samples_per_frame]
            self._pending = self._pending[:, self.samples_per_frame :]
            out += self._send_samples(block)
        if now_s - self._last_status_s >= STATUS_INTERVAL_S:
            return out + self._send_status(now_s)
        return out + self._status_if_changed(now_s)

    def poll(self, now_s: float) -> bytes:
        """Run the watchdog and stim timing without producing samples."""
        return self.advance(0, now_s)

    # -- host messages --------------------------------------------------------------------------

    def _handle(self, message: object, now_s: float) -> bytes:
        if isinstance(message, Heartbeat):
            return self._send(Heartbeat(message.counter))
        if isinstance(message, InfoRequest):
            return self._send(self.info)
        if isinstance(message, EmergencyStop):
            self.stats.estops += 1
            self._estop_latched = True
            self._stop(StimState.STOPPED_ESTOP, now_s)
            return self._send(EmergencyStopAck())
        if isinstance(message, EmergencyStopClear):
            self._estop_latched = False
            if self._state in (StimState.STOPPED_ESTOP, StimState.STOPPED_WATCHDOG):
                self._state = StimState.IDLE
            return self._send_status(now_s)  # the host's confirmation that it is re-armed
        if isinstance(message, StimCommand):
            return self._command(message, now_s)
        return b""

    def _command(self, cmd: StimCommand, now_s: float) -> bytes:
        reason = self._refusal(cmd, now_s)
        if reason is not None:
            self.stats.commands_refused += 1
            return self._send(StimRefused(cmd.command_id, reason))
        self.stats.commands_accepted += 1
        self._burst = _Burst(cmd, now_s)
        self._phase = 0
        ack = self._send(StimAck(cmd.command_id))
        return ack + self._tick(now_s)  # enters the first phase and reports it

    def _refusal(self, cmd: StimCommand, now_s: float) -> RefusalReason | None:
        """The firmware's own checks, safety first: a refusal names the first that fails."""
        lim = self.limits
        if self._estop_latched:
            return RefusalReason.ESTOP_LATCHED
        if not 0 <= cmd.channel < self.info.n_channels:
            return RefusalReason.BAD_CHANNEL
        if not 0 <= cmd.amplitude_ma <= lim.max_amplitude_ma:
            return RefusalReason.AMPLITUDE_LIMIT
        if not 1 <= cmd.pulse_width_us <= lim.max_pulse_width_us:
            return RefusalReason.PULSE_WIDTH_LIMIT
        if not lim.min_frequency_hz <= cmd.frequency_hz <= lim.max_frequency_hz:
            return RefusalReason.FREQUENCY_LIMIT
        if cmd.burst_ms > lim.max_burst_ms:
            return RefusalReason.BURST_TOO_LONG
        if self._burst is not None:
            return RefusalReason.BUSY
        if (now_s - self._rest_from_s) * 1000 < lim.min_rest_ms - _TIME_EPS_MS:
            return RefusalReason.TOO_SOON
        if not self._contact[cmd.channel]:
            return RefusalReason.NO_CONTACT
        return None

    # -- stimulation state machine --------------------------------------------------------------

    def _tick(self, now_s: float) -> bytes:
        """Move the burst on to `now_s`; one Status per state entered, so none is skipped."""
        self._now_s = max(self._now_s, now_s)
        b, out = self._burst, b""
        if b is None:
            return out
        deadline = self._last_host_rx_s + self.watchdog_s
        if not self._contact[b.command.channel]:
            self._stop(StimState.IDLE, now_s)
            return self._status_if_changed(now_s)
        phases = b.phase_ends()
        while self._phase < len(phases):
            end_s, state = phases[self._phase]
            if deadline < end_s and now_s > deadline:
                self.stats.watchdog_trips += 1
                self._stop(StimState.STOPPED_WATCHDOG, deadline)
                return out + self._status_if_changed(now_s)
            self._state = state
            out += self._status_if_changed(now_s)  # reports a phase passed between two ticks
            if now_s < end_s:
                return out
            self._phase += 1
        self._burst = None
        self._state = StimState.IDLE
        self._rest_from_s = b.end_s
        return out + self._status_if_changed(now_s)

    def _stop(self, state: StimState, at_s: float) -> None:
        if self._burst is not None:
            self._rest_from_s = at_s
        self._burst = None
        self._state = state

    # -- outgoing frames ------------------------------------------------------------------------

    def _acquire(self, n: int) -> None:
        mv = np.asarray(self._source(n), dtype=np.float64)
        if mv.shape != (self.info.n_channels, n):
            raise ValueError(f"source returned {mv.shape}, expected {(self.info.n_channels, n)}")
        counts = np.rint(mv * self._scale)
        clipped = np.clip(counts, -self._adc_max - 1, self._adc_max)
        self.stats.samples_clipped += int(np.count_nonzero(clipped != counts))
        self._pending = np.concatenate([self._pending, clipped.astype(np.int16)], axis=1)

    def _send_samples(self, block: np.ndarray) -> bytes:
        first = self._samples_done
        self._samples_done += block.shape[1]
        self.stats.samples_sent += block.shape[1]
        counter = (self._start_counter + first) % (1 << 32)
        device_time_us = round(first * 1e6 / self.info.sample_rate_hz)
        return self._send(SampleFrame(counter, device_time_us, block))

    def _status_if_changed(self, now_s: float) -> bytes:
        changed = self._current_status() != self._last_status
        return self._send_status(now_s) if changed else b""

    def _send_status(self, now_s: float) -> bytes:
        self._last_status = self._current_status()
        self._last_status_s = now_s
        self.stats.status_sent += 1
        return self._send(self._last_status)

    def _current_status(self) -> Status:
        return Status(self.battery_pct, tuple(self._contact), self._state)

    def _send(self, message: Message) -> bytes:
        self.stats.frames_sent += 1
        return self._conn.send(message)
