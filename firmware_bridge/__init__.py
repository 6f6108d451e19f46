"""Sans-I/O wire protocol to the EMG/stimulation firmware: bytes in, events out.

Nothing here imports asyncio, serial, bleak or socket; transports live in `devices/`.
"""

from .clock import ClockMapper
from .codec import MESSAGE_TYPES
from .connection import (
    NEED_DATA,
    Connection,
    ConnectionStats,
    Event,
    NeedData,
    ProtocolErrorEvent,
    Role,
    SampleGap,
)
from .emulator import EmulatedFirmware, FirmwareLimits, FirmwareStats, SignalSource
from .errors import LocalProtocolError
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
from .framing import MAX_FRAME_SIZE, PROTOCOL_VERSION, ErrorKind, FrameDecoder, crc16
from .gatt import DEVICE_TO_HOST_UUID, HOST_TO_DEVICE_UUID, SERVICE_UUID, chunk_for_mtu

__all__ = [
    "DEVICE_TO_HOST_UUID",
    "HOST_TO_DEVICE_UUID",
    "MAX_FRAME_SIZE",
    "MESSAGE_TYPES",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SERVICE_UUID",
    "ClockMapper",
    "Connection",
    "ConnectionStats",
    "DeviceError",
    "DeviceInfo",
    "EmergencyStop",
    "EmergencyStopAck",
    "EmergencyStopClear",
    "EmulatedFirmware",
    "ErrorKind",
    "Event",
    "FirmwareLimits",
    "FirmwareStats",
    "FrameDecoder",
    "Heartbeat",
    "InfoRequest",
    "LocalProtocolError",
    "Message",
    "NeedData",
    "ProtocolErrorEvent",
    "RefusalReason",
    "Role",
    "SampleFrame",
    "SampleGap",
    "SignalSource",
    "Status",
    "StimAck",
    "StimCommand",
    "StimRefused",
    "StimState",
    "chunk_for_mtu",
    "crc16",
]
