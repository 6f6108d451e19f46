"""EmulatedFirmware: samples, limits, contact, emergency stop, watchdog, burst timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_bridge import (
    Connection,
    DeviceInfo,
    EmergencyStop,
    EmergencyStopAck,
    EmergencyStopClear,
    Event,
    Heartbeat,
    InfoRequest,
    Message,
    RefusalReason,
    Role,
    SampleFrame,
    SampleGap,
    Status,
    StimAck,
    StimCommand,
    StimRefused,
    StimState,
)
from firmware_bridge.emulator import EmulatedFirmware, FirmwareLimits, SignalSource
from firmware_bridge.examples import EXAMPLE_INFO

INFO = EXAMPLE_INFO  # 2 channels, 2000 Hz, 195 nV per count, 16 bits


def flat(level_mv: float = 0.0) -> SignalSource:
    def source(n: int) -> np.ndarray:
        return np.full((INFO.n_channels, n), level_mv)

    return source


class Rig:
    """A host Connection wired to an emulator, with a hand-stepped clock."""

    def __init__(self, source: SignalSource | None = None, **kwargs: Any) -> None:
        self.fw = EmulatedFirmware(INFO, source or flat(), **kwargs)
        self.host = Connection(Role.HOST)
        self.now = 0.0
        self.next_id = 1

    def _take(self, data: bytes) -> list[Event]:
        self.host.receive_data(data)
        return list(self.host.events())

    def send(self, message: Message) -> list[Event]:
        return self._take(self.fw.receive_data(self.host.send(message), self.now))

    def stim(self, **overrides: float) -> list[Event]:
        fields: dict[str, float] = dict(
            channel=0, amplitude_ma=20.0, pulse_width_us=300, frequency_hz=50,
            ramp_up_ms=500, hold_ms=1000, ramp_down_ms=500,
        )  # fmt: skip
        fields.update(overrides)
        cmd = StimCommand(command_id=self.next_id, **fields)  # type: ignore[arg-type]
        self.next_id += 1
        return self.send(cmd)

    def run(
        self, seconds: float, step: float = 0.01, heartbeat_every: float | None = None
    ) -> list[Event]:
        """Step the clock, acquiring samples each step and optionally sending heartbeats."""
        events: list[Event] = []
        last_beat = self.now
        for _ in range(round(seconds / step)):
            self.now = round(self.now + step, 9)
            if heartbeat_every is not None and self.now - last_beat >= heartbeat_every - 1e-9:
                events += self.send(Heartbeat(int(self.now * 1000)))
                last_beat = self.now
            events += self._take(self.fw.advance(round(step * INFO.sample_rate_hz), self.now))
        return events


def states(events: list[Event]) -> list[StimState]:
    """Stim states reported, without repeats."""
    out: list[StimState] = []
    for e in events:
        if isinstance(e, Status) and (not out or out[-1] is not e.stim_state):
            out.append(e.stim_state)
    return out


def refusal(events: list[Event]) -> RefusalReason | None:
    found = [e.reason for e in events if isinstance(e, StimRefused)]
    return found[0] if found else None


# -- samples ----------------------------------------------------------------------------------


def test_hello_and_info_request_give_device_info() -> None:
    rig = Rig()
    rig.host.receive_data(rig.fw.hello())
    assert list(rig.host.events()) == [INFO]
    assert rig.send(InfoRequest()) == [INFO]


def test_heartbeat_is_echoed() -> None:
    assert Rig().send(Heartbeat(1234)) == [Heartbeat(1234)]


def test_samples_are_quantised_framed_and_continuous() -> None:
    rig = Rig(source=flat(1.0), samples_per_frame=20)
    frames = [e for e in rig._take(rig.fw.advance(50, 0.0)) if isinstance(e, SampleFrame)]
    assert [f.sample_counter for f in frames] == [0, 20]  # 10 samples held back
    assert frames[1].device_time_us == 10_000  # 20 samples at 2 kHz
    assert np.all(frames[0].samples == round(1.0e6 / 195))
    frames = [e for e in rig._take(rig.fw.advance(10, 0.01)) if isinstance(e, SampleFrame)]
    assert [f.sample_counter for f in frames] == [40]
    assert rig.fw.stats.samples_sent == 60 and rig.host.stats.sample_gaps == 0


def test_out_of_range_input_clips_at_the_adc_rails() -> None:
    rig = Rig(source=flat(-50.0))
    frames = [e for e in rig._take(rig.fw.advance(20, 0.0)) if isinstance(e, SampleFrame)]
    assert np.all(frames[0].samples == -32768)
    assert rig.fw.stats.samples_clipped == 40


def test_counter_wraps_at_u32_without_a_gap() -> None:
    rig = Rig(start_counter=2**32 - 30)
    events = rig._take(rig.fw.advance(100, 0.0))
    counters = [e.sample_counter for e in events if isinstance(e, SampleFrame)]
    assert counters == [2**32 - 30, 2**32 - 10, 10, 30, 50]
    assert not any(isinstance(e, SampleGap) for e in events)


def test_status_at_start_and_every_half_second() -> None:
    rig = Rig()
    events = rig.run(2.0)
    assert sum(isinstance(e, Status) for e in events) == 4
    rig.fw.set_contact(1, False)
    changed = rig.run(0.01)
    assert [e for e in changed if isinstance(e, Status)] == [
        Status(100, (True, False), StimState.IDLE)
    ]


def test_bad_source_shape_is_an_error() -> None:
    fw = EmulatedFirmware(INFO, lambda n: np.zeros((3, n)))
    with pytest.raises(ValueError):
        fw.advance(20, 0.0)


def test_frame_that_cannot_fit_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        EmulatedFirmware(INFO, flat(), samples_per_frame=255)


# -- limits and refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"amplitude_ma": 60.1}, RefusalReason.AMPLITUDE_LIMIT),
        ({"pulse_width_us": 401}, RefusalReason.PULSE_WIDTH_LIMIT),
        ({"pulse_width_us": 0}, RefusalReason.PULSE_WIDTH_LIMIT),
        ({"frequency_hz": 0}, RefusalReason.FREQUENCY_LIMIT),
        ({"frequency_hz": 101}, RefusalReason.FREQUENCY_LIMIT),
        ({"hold_ms": 9001}, RefusalReason.BURST_TOO_LONG),  # 500 + 9001 + 500 > 10 000
        ({"channel": 2}, RefusalReason.BAD_CHANNEL),
    ],
)
def test_out_of_range_commands_are_refused_with_the_reason(
    overrides: dict[str, float], reason: RefusalReason
) -> None:
    rig = Rig()
    events = rig.stim(**overrides)
    assert refusal(events) is reason
    assert rig.fw.stim_state is StimState.IDLE
    assert rig.fw.stats.commands_refused == 1


def test_the_limits_themselves_are_allowed() -> None:
    rig = Rig()
    events = rig.stim(amplitude_ma=60.0, pulse_width_us=400, frequency_hz=100, hold_ms=9000)
    assert StimAck(1) in events


def test_custom_limits_apply() -> None:
    rig = Rig(limits=FirmwareLimits(max_amplitude_ma=30.0))
    assert refusal(rig.stim(amplitude_ma=30.5)) is RefusalReason.AMPLITUDE_LIMIT


def test_no_contact_refuses() -> None:
    rig = Rig()
    rig.fw.set_contact(0, False)
    assert refusal(rig.stim(channel=0)) is RefusalReason.NO_CONTACT
    assert StimAck(2) in rig.stim(channel=1)


def test_busy_then_too_soon_then_accepted_after_rest() -> None:
    rig = Rig()
    assert StimAck(1) in rig.stim(ramp_up_ms=100, hold_ms=200, ramp_down_ms=100)
    assert refusal(rig.stim()) is RefusalReason.BUSY
    rig.run(0.5, heartbeat_every=0.1)  # burst over at 0.4 s
    assert rig.fw.stim_state is StimState.IDLE
    assert refusal(rig.stim()) is RefusalReason.TOO_SOON
    rig.run(0.9, heartbeat_every=0.1)  # 1.4 s: a full second of rest
    assert StimAck(4) in rig.stim()


# -- burst timing -----------------------------------------------------------------------------


def test_valid_burst_runs_through_its_phases_by_time() -> None:
    rig = Rig()
    events = rig.stim(ramp_up_ms=500, hold_ms=1000, ramp_down_ms=500)
    assert events[0] == StimAck(1)
    amplitudes = []
    for _ in range(25):
        events += rig.run(0.1, heartbeat_every=0.1)
        amplitudes.append(rig.fw.output_ma)
    assert states(events) == [
        StimState.RAMP_UP,
        StimState.HOLD,
        StimState.RAMP_DOWN,
        StimState.IDLE,
    ]
    assert amplitudes[1] == pytest.approx(8.0)  # 0.2 s into a 0.5 s ramp to 20 mA
    assert amplitudes[9] == pytest.approx(20.0)
    assert amplitudes[17] == pytest.approx(8.0)
    assert amplitudes[-1] == 0.0
    assert rig.fw.stats.watchdog_trips == 0


def test_coarse_ticks_still_report_every_phase_in_order() -> None:
    rig = Rig(watchdog_s=100.0)
    rig.stim(ramp_up_ms=100, hold_ms=100, ramp_down_ms=100)
    rig.now = 5.0
    assert states(rig._take(rig.fw.poll(rig.now))) == [
        StimState.HOLD,
        StimState.RAMP_DOWN,
        StimState.IDLE,
    ]


def test_hold_only_burst_skips_empty_ramps() -> None:
    rig = Rig()
    events = rig.stim(ramp_up_ms=0, hold_ms=300, ramp_down_ms=0)
    events += rig.run(0.5, heartbeat_every=0.1)
    assert states(events) == [StimState.HOLD, StimState.IDLE]


def test_contact_lost_mid_burst_stops_it() -> None:
    rig = Rig()
    rig.stim()
    rig.run(0.2, heartbeat_every=0.1)
    rig.fw.set_contact(0, False)
    events = rig.run(0.02, heartbeat_every=0.1)
    assert rig.fw.stim_state is StimState.IDLE and rig.fw.output_ma == 0.0
    assert Status(100, (False, True), StimState.IDLE) in events


# -- emergency stop ---------------------------------------------------------------------------


def test_estop_stops_at_once_and_latches_until_cleared() -> None:
    rig = Rig()
    rig.stim()
    rig.run(0.7, heartbeat_every=0.1)
    assert rig.fw.stim_state is StimState.HOLD
    events = rig.send(EmergencyStop())
    assert events[0] == EmergencyStopAck()
    assert rig.fw.stim_state is StimState.STOPPED_ESTOP and rig.fw.output_ma == 0.0
    assert Status(100, (True, True), StimState.STOPPED_ESTOP) in events
    rig.run(3.0, heartbeat_every=0.1)  # heartbeats and time do not clear it
    assert rig.fw.stim_state is StimState.STOPPED_ESTOP
    assert refusal(rig.stim()) is RefusalReason.ESTOP_LATCHED
    events = rig.send(EmergencyStopClear())
    assert events == [Status(100, (True, True), StimState.IDLE)]
    assert StimAck(3) in rig.stim()


def test_estop_when_idle_also_latches() -> None:
    rig = Rig()
    assert rig.send(EmergencyStop())[0] == EmergencyStopAck()
    assert refusal(rig.stim()) is RefusalReason.ESTOP_LATCHED


# -- watchdog ---------------------------------------------------------------------------------


def test_watchdog_stops_stim_when_heartbeats_stop() -> None:
    rig = Rig()
    rig.stim(hold_ms=5000)
    events = rig.run(0.24)
    assert rig.fw.stim_state is StimState.RAMP_UP
    events += rig.run(0.02)  # now 0.26 s since the command: past 250 ms of silence
    assert rig.fw.stim_state is StimState.STOPPED_WATCHDOG
    assert rig.fw.output_ma == 0.0 and rig.fw.stats.watchdog_trips == 1
    assert states(events) == [StimState.STOPPED_WATCHDOG]


def test_watchdog_stays_quiet_while_heartbeats_keep_coming() -> None:
    rig = Rig()
    rig.stim(hold_ms=5000)
    rig.run(3.0, heartbeat_every=0.2)
    assert rig.fw.stim_state is StimState.HOLD
    assert rig.fw.stats.watchdog_trips == 0


def test_late_heartbeat_finds_the_stim_already_stopped() -> None:
    rig = Rig()
    rig.stim(hold_ms=5000)
    rig.now = 0.4  # no advance() in between: the transport thread stalled
    events = rig.send(Heartbeat(1))
    assert rig.fw.stim_state is StimState.STOPPED_WATCHDOG
    assert Status(100, (True, True), StimState.STOPPED_WATCHDOG) in events
    assert Heartbeat(1) in events


def test_garbage_from_the_host_does_not_feed_the_watchdog() -> None:
    rig = Rig()
    rig.stim(hold_ms=5000)
    for i in range(30):
        rig.now = round(rig.now + 0.01, 9)
        rig._take(rig.fw.receive_data(b"\x05garbage\x00", rig.now))
        rig._take(rig.fw.advance(20, rig.now))
        if i == 20:
            assert rig.fw.stim_state is StimState.RAMP_UP
    assert rig.fw.stim_state is StimState.STOPPED_WATCHDOG
    assert rig.fw.link_stats.errors == 30


def test_after_a_watchdog_stop_the_host_may_start_again_after_rest() -> None:
    rig = Rig()
    rig.stim(hold_ms=5000)
    rig.run(0.3)
    assert rig.fw.stim_state is StimState.STOPPED_WATCHDOG
    assert refusal(rig.stim()) is RefusalReason.TOO_SOON
    rig.run(1.0, heartbeat_every=0.1)
    assert StimAck(3) in rig.stim()


def test_cli_records_a_clean_replayable_stream(tmp_path: Path) -> None:
    from devices.firmware_pty import main

    out = tmp_path / "stream.bin"
    assert main(["--seconds", "0.5", "--channels", "VM,VL,RF", "-o", str(out)]) == 0
    host = Connection(Role.HOST)
    host.receive_data(out.read_bytes())
    events = list(host.events())
    assert isinstance(events[0], DeviceInfo) and events[0].channel_roles == ("VM", "VL", "RF")
    assert sum(isinstance(e, SampleFrame) for e in events) == 50
    assert host.stats.errors == 0 and host.stats.sample_gaps == 0
