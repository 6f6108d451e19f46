"""One plausible instance of every message, for tests, docs/protocol.md and fake devices."""

from __future__ import annotations

import numpy as np

from .frames import (
    DeviceError,
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

__all__ = ["EXAMPLE_INFO", "device_to_host_examples", "host_to_device_examples"]

# 16-bit ADC over +-6.4 mV at the electrodes: 6.4 mV / 32768 ~= 195 nV per count.
EXAMPLE_INFO = DeviceInfo(
    protocol_version=1,
    firmware_version="1.2.3",
    serial="VMF-0042",
    sample_rate_hz=2000.0,
    channel_roles=("VM", "VL"),
    lsb_nv=195,
    adc_bits=16,
)


def device_to_host_examples() -> list[Message]:
    samples = np.array([[10, -20, 300, -4000], [1, 2, -3, 32767]], dtype=np.int16)
    return [
        EXAMPLE_INFO,
        SampleFrame(sample_counter=1000, device_time_us=500_000, samples=samples),
        Status(battery_pct=87, contact_ok=(True, False), stim_state=StimState.HOLD),
        StimAck(command_id=42),
        StimRefused(command_id=43, reason=RefusalReason.TOO_SOON),
        Heartbeat(counter=7),
        EmergencyStopAck(),
        DeviceError(code=3, message="ADC overrun"),
    ]


def host_to_device_examples() -> list[Message]:
    return [
        StimCommand(
            command_id=42,
            channel=0,
            amplitude_ma=25.5,
            pulse_width_us=300,
            frequency_hz=50,
            ramp_up_ms=1000,
            hold_ms=5000,
            ramp_down_ms=1000,
        ),
        Heartbeat(counter=7),
        EmergencyStop(),
        EmergencyStopClear(),
        InfoRequest(),
    ]
