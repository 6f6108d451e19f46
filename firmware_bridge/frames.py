"""Every message that crosses the wire, as frozen dataclasses.

These are values, not I/O: the codec turns them into bytes and back, the `Connection` decides who
may send which. Units are in the field names' docs and match what the firmware stores, so a
message read back from the wire compares equal to the one that was sent (except `SampleFrame`,
whose numpy array makes `==` meaningless; compare its fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "DeviceError",
    "DeviceInfo",
    "EmergencyStop",
    "EmergencyStopAck",
    "EmergencyStopClear",
    "Heartbeat",
    "InfoRequest",
    "Message",
    "RefusalReason",
    "SampleFrame",
    "Status",
    "StimAck",
    "StimCommand",
    "StimRefused",
    "StimState",
]


class StimState(IntEnum):
    """What the stimulator output stage is doing. The value is the byte on the wire."""

    IDLE = 0
    RAMP_UP = 1
    HOLD = 2
    RAMP_DOWN = 3
    STOPPED_ESTOP = 4  # latched until EmergencyStopClear
    STOPPED_WATCHDOG = 5  # host went silent mid-burst; informational, not latched

    @property
    def stimulating(self) -> bool:
        return self in (StimState.RAMP_UP, StimState.HOLD, StimState.RAMP_DOWN)


class RefusalReason(IntEnum):
    """Why the firmware refused a StimCommand. The value is the byte on the wire."""

    AMPLITUDE_LIMIT = 1
    PULSE_WIDTH_LIMIT = 2
    FREQUENCY_LIMIT = 3
    BURST_TOO_LONG = 4
    TOO_SOON = 5  # less than the firmware's minimum rest since the last burst ended
    NO_CONTACT = 6  # electrode contact lost on that channel
    ESTOP_LATCHED = 7
    BUSY = 8  # a burst is already running
    BAD_CHANNEL = 9  # no such stimulation channel


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Sent by the device on connect (hello) and on InfoRequest."""

    protocol_version: int
    firmware_version: str  # "major.minor.patch", each 0..255
    serial: str
    sample_rate_hz: float
    channel_roles: tuple[str, ...]  # e.g. ("VM", "VL"); index = channel number
    lsb_nv: int  # nanovolts per ADC count, referred to the electrode input
    adc_bits: int  # effective resolution; samples are clipped to this signed range

    @property
    def n_channels(self) -> int:
        return len(self.channel_roles)

    @property
    def lsb_mv(self) -> float:
        """Millivolts per ADC count: multiply int16 samples by this to get mV."""
        return self.lsb_nv * 1e-6


@dataclass(frozen=True, slots=True, eq=False)
class SampleFrame:
    """A block of consecutive samples from all channels, device to host."""

    sample_counter: int  # index of the first sample, u32, wraps at 2**32
    device_time_us: int  # device clock at the first sample, u64 microseconds since boot
    samples: npt.NDArray[np.int16]  # shape (n_channels, n_samples), raw ADC counts

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])


@dataclass(frozen=True, slots=True)
class Status:
    """Periodic device status (every 0.5 s and whenever it changes)."""

    battery_pct: int
    contact_ok: tuple[bool, ...]  # per channel; False = electrode off or impedance too high
    stim_state: StimState


@dataclass(frozen=True, slots=True)
class StimCommand:
    """One stimulation burst: ramp up, hold, ramp down. Host to device."""

    command_id: int  # u32, echoed in the ack/refusal
    channel: int
    amplitude_ma: float  # carried as 0.1 mA units, so it is rounded to 0.1 mA on the wire
    pulse_width_us: int
    frequency_hz: int
    ramp_up_ms: int
    hold_ms: int
    ramp_down_ms: int

    @property
    def burst_ms(self) -> int:
        return self.ramp_up_ms + self.hold_ms + self.ramp_down_ms


@dataclass(frozen=True, slots=True)
class StimAck:
    """The burst was accepted and has started."""

    command_id: int


@dataclass(frozen=True, slots=True)
class StimRefused:
    command_id: int
    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Keeps the device's watchdog fed (host to device); the device echoes the counter back."""

    counter: int  # u32


@dataclass(frozen=True, slots=True)
class EmergencyStop:
    """Host to device: stop stimulation now and latch until EmergencyStopClear."""


@dataclass(frozen=True, slots=True)
class EmergencyStopAck:
    """Device to host: output is off and the stop is latched."""


@dataclass(frozen=True, slots=True)
class EmergencyStopClear:
    """Host to device: explicit re-arm after an emergency stop."""


@dataclass(frozen=True, slots=True)
class InfoRequest:
    """Host to device: please resend DeviceInfo."""


@dataclass(frozen=True, slots=True)
class DeviceError:
    """Device to host: something the firmware wants logged (not a protocol error)."""

    code: int  # u16
    message: str  # UTF-8, at most 255 bytes


Message = (
    DeviceInfo
    | SampleFrame
    | Status
    | StimCommand
    | StimAck
    | StimRefused
    | Heartbeat
    | EmergencyStop
    | EmergencyStopAck
    | EmergencyStopClear
    | InfoRequest
    | DeviceError
)
