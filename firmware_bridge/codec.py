"""Message bodies: one encode/decode pair per message, all little-endian `struct` layouts.

The body is what sits between the 4-byte header and the CRC (see framing.py). Layouts are fixed
for a protocol version; decoders insist on the exact length so a frame that passed the CRC but
was built for another layout is reported as malformed rather than half-read. Strings are a u8
byte count followed by UTF-8.

Layouts (docs/protocol.md has byte-level examples):

==== ================== ====================================================================
type message            body
==== ================== ====================================================================
0x01 DeviceInfo         protocol_version u8, fw major u8, minor u8, patch u8,
                        sample_rate_hz f64, lsb_nv u32, adc_bits u8, n_channels u8,
                        serial str, then n_channels x role str
0x02 InfoRequest        (empty)
0x10 SampleFrame        sample_counter u32, device_time_us u64, n_channels u8, n_samples u8,
                        n_samples x n_channels x i16, sample-major (s0c0 s0c1 s1c0 ...)
0x11 Status             battery_pct u8, stim_state u8, n_channels u8, contact bitmask u32
                        (bit i = channel i has contact)
0x20 StimCommand        command_id u32, channel u8, amplitude u16 (0.1 mA), pulse_width_us u16,
                        frequency_hz u16, ramp_up_ms u16, hold_ms u16, ramp_down_ms u16
0x21 StimAck            command_id u32
0x22 StimRefused        command_id u32, reason u8
0x30 Heartbeat          counter u32
0x40 EmergencyStop      (empty)
0x41 EmergencyStopAck   (empty)
0x42 EmergencyStopClear (empty)
0x7F DeviceError        code u16, message str
==== ================== ====================================================================
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

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
    RefusalReason,
    SampleFrame,
    Status,
    StimAck,
    StimCommand,
    StimRefused,
    StimState,
)

__all__ = ["DECODERS", "MESSAGE_TYPES", "decode_body", "encode_body"]

MESSAGE_TYPES: dict[type[Message], int] = {
    DeviceInfo: 0x01,
    InfoRequest: 0x02,
    SampleFrame: 0x10,
    Status: 0x11,
    StimCommand: 0x20,
    StimAck: 0x21,
    StimRefused: 0x22,
    Heartbeat: 0x30,
    EmergencyStop: 0x40,
    EmergencyStopAck: 0x41,
    EmergencyStopClear: 0x42,
    DeviceError: 0x7F,
}

_E = TypeVar("_E", StimState, RefusalReason)
_M = TypeVar("_M", bound=Message)

MAX_STATUS_CHANNELS = 32  # the contact bitmask is a u32

_INFO = struct.Struct("<BBBBdIBB")
_SAMPLES = struct.Struct("<IQBB")
_STATUS = struct.Struct("<BBBI")
_STIM = struct.Struct("<IBHHHHHH")
_U32 = struct.Struct("<I")
_REFUSED = struct.Struct("<IB")
_ERROR = struct.Struct("<H")


# -- helpers ----------------------------------------------------------------------------------


def _pack(fmt: struct.Struct, *values: object) -> bytes:
    """struct.pack, with 'does not fit the wire type' reported as the caller's error."""
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise LocalProtocolError(f"value does not fit the wire format: {exc}") from exc


def _unpack(fmt: struct.Struct, body: bytes) -> tuple[Any, ...]:
    if len(body) != fmt.size:
        raise MalformedBody(f"body is {len(body)} bytes, layout needs {fmt.size}")
    return fmt.unpack(body)


def _pack_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise LocalProtocolError(f"string of {len(raw)} UTF-8 bytes exceeds 255: {text[:20]!r}...")
    return bytes([len(raw)]) + raw


def _unpack_str(body: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(body):
        raise MalformedBody("string length byte missing")
    end = pos + 1 + body[pos]
    if end > len(body):
        raise MalformedBody("string runs past the end of the body")
    try:
        return body[pos + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"string is not UTF-8: {exc}") from exc


def _enum(cls: type[_E], value: int) -> _E:
    try:
        return cls(value)
    except ValueError as exc:
        raise MalformedBody(f"{value!r} is not a {cls.__name__}") from exc


# -- per-message pairs ------------------------------------------------------------------------


def encode_device_info(m: DeviceInfo) -> bytes:
    try:
        major, minor, patch = (int(p) for p in m.firmware_version.split("."))
    except ValueError as exc:
        raise LocalProtocolError(f"firmware_version {m.firmware_version!r} is not 'a.b.c'") from exc
    head = _pack(
        _INFO,
        m.protocol_version,
        major,
        minor,
        patch,
        m.sample_rate_hz,
        m.lsb_nv,
        m.adc_bits,
        m.n_channels,
    )
    return head + _pack_str(m.serial) + b"".join(_pack_str(r) for r in m.channel_roles)


def decode_device_info(body: bytes) -> DeviceInfo:
    if len(body) < _INFO.size:
        raise MalformedBody(f"DeviceInfo body of {len(body)} bytes is too short")
    version, major, minor, patch, rate, lsb_nv, adc_bits, n_ch = _INFO.unpack_from(body)
    serial, pos = _unpack_str(body, _INFO.size)
    roles = []
    for _ in range(n_ch):
        role, pos = _unpack_str(body, pos)
        roles.append(role)
    if pos != len(body):
        raise MalformedBody(f"{len(body) - pos} trailing bytes after DeviceInfo")
    return DeviceInfo(
        version, f"{major}.{minor}.{patch}", serial, rate, tuple(roles), lsb_nv, adc_bits
    )


def encode_sample_frame(m: SampleFrame) -> bytes:
    samples = np.asarray(m.samples)
    if samples.ndim != 2 or samples.dtype.kind not in "iu":
        raise LocalProtocolError(f"samples must be a 2-D integer array, got {samples.dtype}")
    n_ch, n_s = samples.shape
    if samples.size and (samples.min() < -32768 or samples.max() > 32767):
        raise LocalProtocolError("sample values do not fit int16")
    head = _pack(_SAMPLES, m.sample_counter, m.device_time_us, n_ch, n_s)
    # Transposing to (n_samples, n_channels) in C order is the sample-major interleave.
    return head + np.ascontiguousarray(samples.T, dtype="<i2").tobytes()


def decode_sample_frame(body: bytes) -> SampleFrame:
    if len(body) < _SAMPLES.size:
        raise MalformedBody(f"SampleFrame body of {len(body)} bytes is too short")
    counter, t_us, n_ch, n_s = _SAMPLES.unpack_from(body)
    expected = _SAMPLES.size + 2 * n_ch * n_s
    if len(body) != expected:
        raise MalformedBody(f"{n_ch}x{n_s} samples need {expected} bytes, body is {len(body)}")
    flat = np.frombuffer(body, dtype="<i2", offset=_SAMPLES.size)
    samples = np.ascontiguousarray(flat.reshape(n_s, n_ch).T, dtype=np.int16)
    # Read-only: one decoded frame fans out to several consumers; none may alter it for others.
    samples.flags.writeable = False
    return SampleFrame(counter, t_us, samples)


def encode_status(m: Status) -> bytes:
    n_ch = len(m.contact_ok)
    if n_ch > MAX_STATUS_CHANNELS:
        raise LocalProtocolError(f"{n_ch} channels exceed the {MAX_STATUS_CHANNELS}-bit mask")
    mask = sum(1 << i for i, ok in enumerate(m.contact_ok) if ok)
    return _pack(_STATUS, m.battery_pct, int(m.stim_state), n_ch, mask)


def decode_status(body: bytes) -> Status:
    battery, state, n_ch, mask = _unpack(_STATUS, body)
    if n_ch > MAX_STATUS_CHANNELS:
        raise MalformedBody(f"{n_ch} channels exceed the {MAX_STATUS_CHANNELS}-bit mask")
    contact = tuple(bool(mask >> i & 1) for i in range(n_ch))
    return Status(battery, contact, _enum(StimState, state))


def encode_stim_command(m: StimCommand) -> bytes:
    if not m.amplitude_ma >= 0:  # also rejects NaN
        raise LocalProtocolError(f"amplitude_ma must be >= 0, got {m.amplitude_ma}")
    return _pack(
        _STIM,
        m.command_id,
        m.channel,
        round(m.amplitude_ma * 10),
        m.pulse_width_us,
        m.frequency_hz,
        m.ramp_up_ms,
        m.hold_ms,
        m.ramp_down_ms,
    )


def decode_stim_command(body: bytes) -> StimCommand:
    cid, ch, amp, pw, freq, up, hold, down = _unpack(_STIM, body)
    return StimCommand(cid, ch, amp / 10, pw, freq, up, hold, down)


def decode_u32(body: bytes) -> int:
    (value,) = _unpack(_U32, body)
    return int(value)


def encode_stim_refused(m: StimRefused) -> bytes:
    return _pack(_REFUSED, m.command_id, int(m.reason))


def decode_stim_refused(body: bytes) -> StimRefused:
    cid, reason = _unpack(_REFUSED, body)
    return StimRefused(cid, _enum(RefusalReason, reason))


def encode_device_error(m: DeviceError) -> bytes:
    return _pack(_ERROR, m.code) + _pack_str(m.message)


def decode_device_error(body: bytes) -> DeviceError:
    if len(body) < _ERROR.size:
        raise MalformedBody("DeviceError body too short")
    (code,) = _ERROR.unpack_from(body)
    message, end = _unpack_str(body, _ERROR.size)
    if end != len(body):
        raise MalformedBody(f"{len(body) - end} trailing bytes after DeviceError")
    return DeviceError(code, message)


def _empty(cls: Callable[[], _M]) -> Callable[[bytes], _M]:
    def decode(body: bytes) -> _M:
        if body:
            raise MalformedBody(f"expected an empty body, got {len(body)} bytes")
        return cls()

    return decode


# -- dispatch ---------------------------------------------------------------------------------

DECODERS: dict[int, Callable[[bytes], Message]] = {
    0x01: decode_device_info,
    0x02: _empty(InfoRequest),
    0x10: decode_sample_frame,
    0x11: decode_status,
    0x20: decode_stim_command,
    0x21: lambda body: StimAck(decode_u32(body)),
    0x22: decode_stim_refused,
    0x30: lambda body: Heartbeat(decode_u32(body)),
    0x40: _empty(EmergencyStop),
    0x41: _empty(EmergencyStopAck),
    0x42: _empty(EmergencyStopClear),
    0x7F: decode_device_error,
}


def encode_body(message: Message) -> tuple[int, bytes]:
    """(msg_type, body) for a message. Raises LocalProtocolError if a field does not fit."""
    match message:
        case DeviceInfo():
            body = encode_device_info(message)
        case SampleFrame():
            body = encode_sample_frame(message)
        case Status():
            body = encode_status(message)
        case StimCommand():
            body = encode_stim_command(message)
        case StimAck() | Heartbeat():
            field = message.command_id if isinstance(message, StimAck) else message.counter
            body = _pack(_U32, field)
        case StimRefused():
            body = encode_stim_refused(message)
        case DeviceError():
            body = encode_device_error(message)
        case EmergencyStop() | EmergencyStopAck() | EmergencyStopClear() | InfoRequest():
            body = b""
        case _:
            raise LocalProtocolError(f"not a protocol message: {message!r}")
    return MESSAGE_TYPES[type(message)], body


def decode_body(msg_type: int, body: bytes) -> Message:
    """Raises KeyError for an unknown type and MalformedBody for a body that does not fit."""
    return DECODERS[msg_type](body)
