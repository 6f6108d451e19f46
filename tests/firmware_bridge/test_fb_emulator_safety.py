"""Safety invariants of the emulated firmware under random host behaviour (hypothesis)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import (
    Connection,
    EmergencyStop,
    EmergencyStopClear,
    Heartbeat,
    Role,
    StimAck,
    StimCommand,
    StimState,
)
from firmware_bridge.emulator import EmulatedFirmware, FirmwareLimits
from firmware_bridge.examples import EXAMPLE_INFO

LIMITS = FirmwareLimits()


def stim_commands(
    amp_tenths: int, pulse_us: int, freq_hz: int, ramp_ms: int, hold_ms: int, channels: int
) -> st.SearchStrategy[StimCommand]:
    return st.builds(
        StimCommand,
        command_id=st.integers(0, 2**32 - 1),
        channel=st.integers(0, channels - 1),
        amplitude_ma=st.integers(0, amp_tenths).map(lambda tenths: tenths / 10),
        pulse_width_us=st.integers(0, pulse_us),
        frequency_hz=st.integers(0, freq_hz),
        ramp_up_ms=st.integers(0, ramp_ms),
        hold_ms=st.integers(0, hold_ms),
        ramp_down_ms=st.integers(0, ramp_ms),
    )


# Half plausible (mostly accepted, so bursts really run), half anything the wire can carry.
commands = st.one_of(
    stim_commands(600, 400, 100, 800, 2000, channels=2),
    stim_commands(800, 600, 150, 4000, 12000, channels=4),
)
# Heartbeats and commands come up most, so bursts run long enough to meet the other events.
simple = st.sampled_from(["heartbeat"] * 4 + ["estop", "clear", "clear", "garbage", "nothing"])
actions = st.one_of(
    simple,
    commands,
    st.tuples(st.just("contact"), st.integers(0, 1), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.02, 0.1, 0.2]) | st.floats(0, 0.6), actions)))
def test_no_host_behaviour_breaks_the_firmware_safety_rules(
    steps: list[tuple[float, object]],
) -> None:
    fw = EmulatedFirmware(EXAMPLE_INFO, lambda n: np.zeros((2, n)), LIMITS)
    host = Connection(Role.HOST)
    now, last_valid_rx = 0.0, -1e9
    accepted: list[tuple[float, StimCommand]] = []
    for dt, action in steps:
        now += dt
        host.receive_data(fw.advance(int(dt * 2000), now))
        list(host.events())
        data = b""
        if action == "heartbeat":
            data = host.send(Heartbeat(1))
        elif action == "estop":
            data = host.send(EmergencyStop())
        elif action == "clear":
            data = host.send(EmergencyStopClear())
        elif action == "garbage":
            data = b"\x07garbage\x00"
        elif isinstance(action, tuple):
            fw.set_contact(action[1], action[2])
        elif isinstance(action, StimCommand):
            data = host.send(action)
        if data:
            host.receive_data(fw.receive_data(data, now))
            if action != "garbage":
                last_valid_rx = now
            for event in host.events():
                if isinstance(event, StimAck) and isinstance(action, StimCommand):
                    accepted.append((now, action))

        # The rules the real firmware must keep, whatever the host does.
        assert 0.0 <= fw.output_ma <= LIMITS.max_amplitude_ma + 1e-9
        if fw.stim_state.stimulating:
            assert now - last_valid_rx <= fw.watchdog_s
            assert not fw.estop_latched
        if fw.estop_latched:
            assert fw.stim_state is StimState.STOPPED_ESTOP
    for _, cmd in accepted:
        assert 0 < cmd.pulse_width_us <= LIMITS.max_pulse_width_us
        assert LIMITS.min_frequency_hz <= cmd.frequency_hz <= LIMITS.max_frequency_hz
        assert cmd.amplitude_ma <= LIMITS.max_amplitude_ma
        assert cmd.burst_ms <= LIMITS.max_burst_ms
        assert cmd.channel < EXAMPLE_INFO.n_channels
    # Bursts may be cut short, but never start less than the minimum rest after the last start.
    starts = [t for t, _ in accepted]
    for t0, t1 in pairwise(starts):
        assert t1 - t0 >= LIMITS.min_rest_ms / 1000 - 1e-6
