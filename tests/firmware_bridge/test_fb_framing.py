"""Framing layer: CRC, COBS, delimiter resync, size limits."""

from __future__ import annotations

import struct

from cobs import cobs

from firmware_bridge.framing import (
    MAX_ENCODED_SIZE,
    MAX_FRAME_SIZE,
    ErrorKind,
    FrameDecoder,
    FramingError,
    RawFrame,
    crc16,
    encode_frame,
)


def drain(decoder: FrameDecoder) -> list[RawFrame | FramingError]:
    return list(decoder)


def test_crc16_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_encoded_frame_layout() -> None:
    wire = encode_frame(0x30, 0x1234, b"\x07\x00\x00\x00")
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    frame = cobs.decode(wire[:-1])
    assert frame[:4] == bytes([1, 0x30, 0x34, 0x12])
    assert frame[4:-2] == b"\x07\x00\x00\x00"
    assert struct.unpack("<H", frame[-2:])[0] == crc16(frame[:-2])


def test_decoder_yields_raw_frames_and_ignores_empty_frames() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x00\x00" + encode_frame(0x30, 5, b"abcd") + b"\x00" + encode_frame(0x40, 6, b""))
    assert drain(dec) == [RawFrame(1, 0x30, 5, b"abcd"), RawFrame(1, 0x40, 6, b"")]
    assert dec.buffered == 0


def test_partial_frame_waits_for_delimiter() -> None:
    dec = FrameDecoder()
    wire = encode_frame(0x30, 1, b"wxyz")
    dec.feed(wire[:-1])
    assert dec.next_frame() is None
    assert dec.buffered == len(wire) - 1
    dec.feed(wire[-1:])
    assert dec.next_frame() == RawFrame(1, 0x30, 1, b"wxyz")


def test_bad_cobs_runt_and_crc_are_typed() -> None:
    dec = FrameDecoder()
    good = encode_frame(0x30, 1, b"1234")
    bad_crc = bytearray(cobs.decode(good[:-1]))
    bad_crc[5] ^= 0x10
    dec.feed(b"\x09\x01\x00")  # code byte promises 8 more bytes than there are
    dec.feed(cobs.encode(b"\x01\x30\x00") + b"\x00")  # 3 bytes: shorter than header + CRC
    dec.feed(cobs.encode(bytes(bad_crc)) + b"\x00")
    dec.feed(good)
    kinds = [item.kind if isinstance(item, FramingError) else item for item in drain(dec)]
    assert kinds == [
        ErrorKind.COBS,
        ErrorKind.MALFORMED,
        ErrorKind.CRC,
        RawFrame(1, 0x30, 1, b"1234"),
    ]


def test_largest_frame_passes_and_one_more_byte_is_refused() -> None:
    body = bytes(range(1, 256)) * 5
    fits = body[: MAX_FRAME_SIZE - 6]
    dec = FrameDecoder()
    dec.feed(encode_frame(0x7F, 0, fits))
    assert drain(dec) == [RawFrame(1, 0x7F, 0, fits)]
    too_big = bytes([1, 0x7F, 0, 0]) + body[: MAX_FRAME_SIZE - 6 + 1]
    too_big += struct.pack("<H", crc16(too_big))
    dec.feed(cobs.encode(too_big) + b"\x00" + encode_frame(0x30, 1, b"okay"))
    out = drain(dec)
    assert isinstance(out[0], FramingError) and out[0].kind is ErrorKind.OVERSIZE
    assert out[1:] == [RawFrame(1, 0x30, 1, b"okay")]


def test_endless_garbage_costs_one_oversize_error_and_bounded_memory() -> None:
    dec = FrameDecoder()
    errors = []
    for _ in range(50):
        dec.feed(b"\x55" * 500)
        errors += drain(dec)
        assert dec.buffered <= MAX_ENCODED_SIZE + 500
    assert [e.kind for e in errors if isinstance(e, FramingError)] == [ErrorKind.OVERSIZE]
    dec.feed(b"\x55\x00" + encode_frame(0x30, 2, b"back"))
    assert drain(dec) == [RawFrame(1, 0x30, 2, b"back")]


def test_gatt_chunks_reassemble_across_notifications() -> None:
    from firmware_bridge import Connection, Role
    from firmware_bridge.examples import device_to_host_examples
    from firmware_bridge.gatt import chunk_for_mtu

    dev, host = Connection(Role.DEVICE), Connection(Role.HOST)
    wire = b"".join(dev.send(m) for m in device_to_host_examples())
    chunks = chunk_for_mtu(wire, 23)
    assert max(map(len, chunks)) == 20 and b"".join(chunks) == wire
    for chunk in chunks:
        host.receive_data(chunk)
    assert len(list(host.events())) == len(device_to_host_examples())
    assert host.stats.errors == 0
