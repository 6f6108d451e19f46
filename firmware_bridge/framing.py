"""Byte framing: COBS with a 0x00 delimiter, a 4-byte header and a CRC-16 trailer.

Decoded frame (before COBS), all little-endian::

    [version u8][msg_type u8][seq u16][body ...][crc16 u16]

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) over every
byte before it. COBS guarantees the encoded frame contains no 0x00, so the delimiter is the only
thing a receiver needs to find frame boundaries: after any damage it resynchronises at the next
0x00 and loses at most the damaged frame. This module knows nothing about message types; it only
yields `RawFrame`s whose CRC checked out, or `FramingError`s.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import StrEnum

from cobs import cobs

__all__ = [
    "HEADER_SIZE",
    "MAX_ENCODED_SIZE",
    "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "ErrorKind",
    "FrameDecoder",
    "FramingError",
    "RawFrame",
    "crc16",
    "encode_frame",
]

PROTOCOL_VERSION = 1
MAX_FRAME_SIZE = 1024  # decoded bytes including header and CRC; sized for the MCU's RX buffer
HEADER_SIZE = 4
CRC_SIZE = 2
MIN_FRAME_SIZE = HEADER_SIZE + CRC_SIZE
# COBS adds one code byte per started run of 254 bytes; anything longer cannot be a legal frame.
MAX_ENCODED_SIZE = MAX_FRAME_SIZE + (MAX_FRAME_SIZE + 253) // 254
DELIMITER = b"\x00"

_HEADER = struct.Struct("<BBH")
_CRC = struct.Struct("<H")


class ErrorKind(StrEnum):
    """Kinds of remote misbehaviour. Never raised: reported as events and counted."""

    CRC = "crc"
    COBS = "cobs"
    OVERSIZE = "oversize"
    MALFORMED = "malformed"  # runt frame or body that does not match its message layout
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_DIRECTION = "wrong_direction"  # e.g. a device sending a StimCommand


@dataclass(frozen=True, slots=True)
class RawFrame:
    """A frame whose CRC is good; the body is not yet interpreted."""

    version: int
    msg_type: int
    seq: int
    body: bytes


@dataclass(frozen=True, slots=True)
class FramingError:
    kind: ErrorKind
    detail: str


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE. `binascii.crc_hqx` is exactly this with init 0xFFFF (check 0x29B1)."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(msg_type: int, seq: int, body: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Header + body + CRC, COBS-encoded, with the trailing 0x00 delimiter."""
    frame = _HEADER.pack(version, msg_type, seq & 0xFFFF) + body
    frame += _CRC.pack(crc16(frame))
    if len(frame) > MAX_FRAME_SIZE:
        raise ValueError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_SIZE}-byte maximum")
    return bytes(cobs.encode(frame)) + DELIMITER


def decode_frame(encoded: bytes) -> RawFrame | FramingError:
    """Decode one delimiter-free COBS chunk into a checked frame."""
    if len(encoded) > MAX_ENCODED_SIZE:
        return FramingError(ErrorKind.OVERSIZE, f"{len(encoded)} encoded bytes")
    try:
        frame = bytes(cobs.decode(encoded))
    except cobs.DecodeError as exc:
        return FramingError(ErrorKind.COBS, str(exc))
    if len(frame) > MAX_FRAME_SIZE:
        return FramingError(ErrorKind.OVERSIZE, f"{len(frame)} decoded bytes")
    if len(frame) < MIN_FRAME_SIZE:
        return FramingError(ErrorKind.MALFORMED, f"runt frame of {len(frame)} bytes")
    (received,) = _CRC.unpack_from(frame, len(frame) - CRC_SIZE)
    computed = crc16(frame[:-CRC_SIZE])
    if received != computed:
        return FramingError(ErrorKind.CRC, f"crc {received:#06x} != computed {computed:#06x}")
    version, msg_type, seq = _HEADER.unpack_from(frame)
    return RawFrame(version, msg_type, seq, frame[HEADER_SIZE:-CRC_SIZE])


class FrameDecoder:
    """Streaming splitter: feed arbitrary chunks, pull frames or errors one at a time.

    Only bytes after the last delimiter are kept, and at most `MAX_ENCODED_SIZE` of them: a
    sender that never sends 0x00 costs one OVERSIZE error, not unbounded memory.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte; compacted lazily to avoid O(n^2)
        self._discarding = False  # inside an oversize frame: drop bytes up to the next 0x00

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> RawFrame | FramingError | None:
        """The next complete frame or error, or None when more bytes are needed."""
        while True:
            end = self._buf.find(0, self._pos)
            if end < 0:
                return self._no_delimiter()
            chunk = bytes(self._buf[self._pos : end])
            self._pos = end + 1
            self._compact()
            if self._discarding:
                self._discarding = False  # that 0x00 ended the oversize frame: back in sync
                continue
            if not chunk:
                continue  # empty frame: senders may send a lone 0x00 to flush a partial frame
            return decode_frame(chunk)

    def __iter__(self) -> FrameDecoder:
        return self

    def __next__(self) -> RawFrame | FramingError:
        item = self.next_frame()
        if item is None:
            raise StopIteration
        return item

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf) - self._pos

    def _no_delimiter(self) -> FramingError | None:
        pending = len(self._buf) - self._pos
        if self._discarding:
            self._buf.clear()
            self._pos = 0
            return None
        if pending > MAX_ENCODED_SIZE:
            self._buf.clear()
            self._pos = 0
            self._discarding = True
            return FramingError(ErrorKind.OVERSIZE, f"no delimiter within {pending} bytes")
        return None

    def _compact(self) -> None:
        # Drop consumed bytes once they are most of the buffer: amortised O(1) per byte even
        # when a whole recording is fed in one call.
        if self._pos == len(self._buf) or (self._pos > 4096 and 2 * self._pos > len(self._buf)):
            del self._buf[: self._pos]
            self._pos = 0
