"""The protocol state machine for one end of the link, with no I/O (in the manner of h11).

Feed it whatever bytes arrived with `receive_data`, pull events with `next_event` until it
returns `NEED_DATA`, and turn outgoing messages into bytes with `send`. The transport (serial,
BLE, pty, a file) is the caller's business.

Two kinds of trouble are kept apart on purpose:

* Our own misuse (a host trying to send a SampleFrame, a field too big for its wire type) raises
  `LocalProtocolError`: it is a bug in the caller and should fail loudly.
* The peer's misbehaviour or a noisy line (bad CRC, bad COBS, unknown type, oversize, truncated
  body, unsupported version) is never raised. It is counted in `stats` and surfaced as a
  `ProtocolErrorEvent`, and decoding resynchronises at the next 0x00. A biofeedback session must
  survive a flaky cable; an exception from the parser would end it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from .codec import DECODERS, MESSAGE_TYPES, decode_body, encode_body
from .errors import LocalProtocolError, MalformedBody
from .frames import (
    DeviceError,
    DeviceInfo,
    EmergencyStop,
    EmergencyStopAck,
    EmergencyStopClear,
    Heartbeat,
    InfoRequest,
    Message,
    SampleFrame,
    Status,
    StimAck,
    StimCommand,
    StimRefused,
)
from .framing import PROTOCOL_VERSION, ErrorKind, FrameDecoder, FramingError, encode_frame

__all__ = [
    "NEED_DATA",
    "Connection",
    "ConnectionStats",
    "Event",
    "NeedData",
    "ProtocolErrorEvent",
    "Role",
    "SampleGap",
]

COUNTER_MODULUS = 1 << 32  # sample_counter is a u32
SEQ_MODULUS = 1 << 16  # frame seq is a u16


class Role(Enum):
    HOST = "host"
    DEVICE = "device"


class NeedData(Enum):
    """Sentinel type: `next_event()` has nothing more until `receive_data()` is called again."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA

HOST_SENDS: frozenset[type[Message]] = frozenset(
    {StimCommand, Heartbeat, EmergencyStop, EmergencyStopClear, InfoRequest}
)
DEVICE_SENDS: frozenset[type[Message]] = frozenset(
    {
        DeviceInfo,
        SampleFrame,
        Status,
        StimAck,
        StimRefused,
        Heartbeat,
        EmergencyStopAck,
        DeviceError,
    }
)
_SENDS = {Role.HOST: HOST_SENDS, Role.DEVICE: DEVICE_SENDS}


@dataclass(frozen=True, slots=True)
class SampleGap:
    """Samples went missing (or the counter jumped back) between two SampleFrames.

    Emitted just before the SampleFrame that revealed it. `missing` is the number of samples
    lost; it is negative when the counter went backwards (device restart, replayed data), in
    which case nothing was lost but the timeline restarted.
    """

    expected: int
    received: int
    missing: int


@dataclass(frozen=True, slots=True)
class ProtocolErrorEvent:
    """The peer sent something we could not use; it was counted and skipped."""

    kind: ErrorKind
    detail: str


Event = Message | SampleGap | ProtocolErrorEvent


@dataclass(slots=True)
class ConnectionStats:
    """Counters since the Connection was made. Mutable and live: read them whenever you like."""

    frames_ok: int = 0
    frames_sent: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    oversize: int = 0
    unknown_type: int = 0
    malformed: int = 0
    unsupported_version: int = 0
    wrong_direction: int = 0
    sample_gaps: int = 0
    samples_lost: int = 0
    seq_gaps: int = 0  # gaps in the peer's frame seq: frames lost in any direction or type
    frames_lost: int = 0  # total frames those seq gaps skipped

    @property
    def errors(self) -> int:
        """All frames rejected, whatever the reason."""
        return (
            self.crc_errors
            + self.cobs_errors
            + self.oversize
            + self.unknown_type
            + self.malformed
            + self.unsupported_version
            + self.wrong_direction
        )


_ERROR_COUNTER = {
    ErrorKind.CRC: "crc_errors",
    ErrorKind.COBS: "cobs_errors",
    ErrorKind.OVERSIZE: "oversize",
    ErrorKind.UNKNOWN_TYPE: "unknown_type",
    ErrorKind.MALFORMED: "malformed",
    ErrorKind.UNSUPPORTED_VERSION: "unsupported_version",
    ErrorKind.WRONG_DIRECTION: "wrong_direction",
}


class Connection:
    """One end of the link. `role` decides what it may send and what it accepts."""

    def __init__(
        self,
        role: Role,
        *,
        supported_versions: frozenset[int] = frozenset({PROTOCOL_VERSION}),
    ) -> None:
        self.role = role
        self.stats = ConnectionStats()
        self._supported_versions = supported_versions
        peer = Role.DEVICE if role is Role.HOST else Role.HOST
        self._peer_type_ids = frozenset(MESSAGE_TYPES[t] for t in _SENDS[peer])
        self._decoder = FrameDecoder()
        self._pending: deque[Event] = deque()
        self._send_seq = 0
        self._expected_seq: int | None = None
        self._expected_counter: int | None = None

    # -- receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the transport, split anywhere. Parsing happens in next_event."""
        self._decoder.feed(bytes(data))

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Never raises for anything the peer sent."""
        while not self._pending:
            item = self._decoder.next_frame()
            if item is None:
                return NEED_DATA
            if isinstance(item, FramingError):
                return self._error(item.kind, item.detail)
            self._handle_frame(item.version, item.msg_type, item.seq, item.body)
        return self._pending.popleft()

    def events(self) -> Iterator[Event]:
        """Drain: every event available now."""
        while (event := self.next_event()) is not NEED_DATA:
            yield event

    @property
    def expected_sample_counter(self) -> int | None:
        """The sample_counter the next SampleFrame should carry; None before the first one."""
        return self._expected_counter

    def _handle_frame(self, version: int, msg_type: int, seq: int, body: bytes) -> None:
        if version not in self._supported_versions:
            self._pending.append(self._error(ErrorKind.UNSUPPORTED_VERSION, f"version {version}"))
            return
        # The CRC was good, so this is a real frame from the peer: its seq is trustworthy even
        # if we cannot use the body.
        self._track_seq(seq)
        if msg_type not in DECODERS:
            self._pending.append(self._error(ErrorKind.UNKNOWN_TYPE, f"type {msg_type:#04x}"))
            return
        if msg_type not in self._peer_type_ids:
            detail = f"type {msg_type:#04x} may not be sent to a {self.role.value}"
            self._pending.append(self._error(ErrorKind.WRONG_DIRECTION, detail))
            return
        try:
            message = decode_body(msg_type, body)
        except MalformedBody as exc:
            detail = f"type {msg_type:#04x}: {exc}"
            self._pending.append(self._error(ErrorKind.MALFORMED, detail))
            return
        self.stats.frames_ok += 1
        if isinstance(message, SampleFrame):
            self._track_samples(message)
        elif isinstance(message, DeviceInfo):
            # A hello usually means the device (re)booted and its sample counter restarted:
            # a jump back to 0 then is not a gap.
            self._expected_counter = None
        self._pending.append(message)

    def _track_seq(self, seq: int) -> None:
        if self._expected_seq is not None and seq != self._expected_seq:
            self.stats.seq_gaps += 1
            self.stats.frames_lost += (seq - self._expected_seq) % SEQ_MODULUS
        self._expected_seq = (seq + 1) % SEQ_MODULUS

    def _track_samples(self, frame: SampleFrame) -> None:
        expected = self._expected_counter
        received = frame.sample_counter
        if expected is not None and received != expected:
            forward = (received - expected) % COUNTER_MODULUS
            # More than half the counter range ahead is read as a jump backwards.
            missing = forward if forward < COUNTER_MODULUS // 2 else forward - COUNTER_MODULUS
            self.stats.sample_gaps += 1
            self.stats.samples_lost += max(missing, 0)
            self._pending.append(SampleGap(expected, received, missing))
        self._expected_counter = (received + frame.n_samples) % COUNTER_MODULUS

    def _error(self, kind: ErrorKind, detail: str) -> ProtocolErrorEvent:
        counter = _ERROR_COUNTER[kind]
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        return ProtocolErrorEvent(kind, detail)

    # -- sending --------------------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Bytes to write to the transport for `message`, stamped with our next seq."""
        if type(message) not in _SENDS[self.role]:
            raise LocalProtocolError(f"a {self.role.value} may not send {type(message).__name__}")
        msg_type, body = encode_body(message)
        try:
            data = encode_frame(msg_type, self._send_seq, body)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self._send_seq = (self._send_seq + 1) % SEQ_MODULUS
        self.stats.frames_sent += 1
        return data
