"""The contract between sample sources and processing: `SampleBlock` and the `Device` protocol."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, Self

import numpy as np

from firmware_bridge import EmergencyStop, EmergencyStopClear, Heartbeat, StimCommand

# What the host may send to a device: stimulation and its safety messages.
HostCommand = StimCommand | EmergencyStop | EmergencyStopClear | Heartbeat


@dataclass(frozen=True, slots=True, eq=False)
class SampleBlock:
    """A run of consecutive samples from one device.

    `first_index` is the device's own sample counter, so a gap between two blocks shows as
    `next.first_index > prev.first_index + prev.n_samples` and is never papered over.
    """

    first_index: int
    t_device: float  # device clock of column 0, seconds, mapped to host time
    rate_hz: float
    channels: tuple[str, ...]
    data: np.ndarray  # float32, (n_channels, n_samples), millivolts
    t_arrival: float = 0.0  # host time.time() when the bytes carrying the last sample arrived

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def end_index(self) -> int:
        return self.first_index + self.n_samples


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    spec: str
    kind: str
    rate_hz: float
    channels: tuple[str, ...]
    firmware_version: str = ""
    serial: str = ""


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


@dataclass(slots=True)
class LinkStats:
    """Counters a device keeps for the session record and the status line."""

    state: LinkState = LinkState.CONNECTING
    blocks: int = 0
    samples: int = 0
    gaps: int = 0
    samples_lost: int = 0
    reconnects: int = 0
    down_s: float = 0.0
    protocol_errors: int = 0
    # Samples that arrived before the device identified itself (stale output of a port opened
    # mid-stream): they cannot be scaled, so they are dropped; normal on connect, not an error.
    samples_before_info: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """Anything other than samples that the device said: status, stimulation replies, errors."""

    message: object
    host_time: float


def describe_event(event: StreamEvent) -> tuple[str, dict[str, object]] | None:
    """(kind, detail) for the session log, or None for chatter (status, heartbeat echoes)."""
    from firmware_bridge import DeviceError as FirmwareError
    from firmware_bridge import EmergencyStopAck, StimAck, StimRefused

    m = event.message
    if isinstance(m, StimAck):
        return "stim_ack", {"command_id": m.command_id}
    if isinstance(m, StimRefused):
        return "stim_refused", {"command_id": m.command_id, "reason": m.reason.name.lower()}
    if isinstance(m, EmergencyStopAck):
        return "estop_ack", {}
    if isinstance(m, FirmwareError):
        return "device_error", {"code": m.code, "message": m.message}
    return None


class DeviceError(Exception):
    """A device cannot be opened or used: bad spec, missing port, refused connection."""


class Device(Protocol):
    info: DeviceInfo
    stats: LinkStats

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def blocks(self) -> AsyncIterator[SampleBlock]: ...

    async def send(self, command: HostCommand) -> None: ...

    def take_events(self) -> list[StreamEvent]:
        """Acks, refusals and other device messages received since the last call."""
        ...
