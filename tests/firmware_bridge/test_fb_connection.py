"""Connection: round trips, arbitrary splits, corruption, resync, gap tracking (h11-style)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import (
    NEED_DATA,
    Connection,
    DeviceInfo,
    EmergencyStop,
    ErrorKind,
    Event,
    Heartbeat,
    LocalProtocolError,
    Message,
    ProtocolErrorEvent,
    Role,
    SampleFrame,
    SampleGap,
    StimAck,
    StimCommand,
)
from firmware_bridge.examples import device_to_host_examples, host_to_device_examples
from firmware_bridge.framing import MAX_FRAME_SIZE, crc16


def key(event: object) -> object:
    """Something comparable with == for any event (SampleFrame's array defeats dataclass eq)."""
    if isinstance(event, SampleFrame):
        return (
            "SampleFrame",
            event.sample_counter,
            event.device_time_us,
            event.samples.shape,
            event.samples.tobytes(),
        )
    return event


def drain(conn: Connection) -> list[Event]:
    return list(conn.events())


def raw_wire(msg_type: int, body: bytes, seq: int = 0, version: int = 1) -> bytes:
    """A frame built by hand, so tests can send what a well-behaved Connection never would."""
    frame = struct.pack("<BBH", version, msg_type, seq) + body
    return bytes(cobs.encode(frame + struct.pack("<H", crc16(frame)))) + b"\x00"


def device_stream() -> tuple[list[Message], bytes]:
    dev = Connection(Role.DEVICE)
    messages = device_to_host_examples()
    return messages, b"".join(dev.send(m) for m in messages)


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("message", device_to_host_examples(), ids=lambda m: type(m).__name__)
def test_device_to_host_round_trip(message: Message) -> None:
    dev, host = Connection(Role.DEVICE), Connection(Role.HOST)
    host.receive_data(dev.send(message))
    assert [key(e) for e in drain(host)] == [key(message)]
    assert host.next_event() is NEED_DATA
    assert host.stats.frames_ok == 1 and host.stats.errors == 0


@pytest.mark.parametrize("message", host_to_device_examples(), ids=lambda m: type(m).__name__)
def test_host_to_device_round_trip(message: Message) -> None:
    dev, host = Connection(Role.DEVICE), Connection(Role.HOST)
    dev.receive_data(host.send(message))
    assert drain(dev) == [message]
    assert dev.stats.frames_ok == 1 and dev.stats.errors == 0


@pytest.mark.parametrize("message", [*host_to_device_examples()[:1], EmergencyStop()])
def test_device_may_not_send_host_messages(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        Connection(Role.DEVICE).send(message)


@pytest.mark.parametrize("message", device_to_host_examples()[:3])
def test_host_may_not_send_device_messages(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        Connection(Role.HOST).send(message)


def test_oversize_message_is_a_local_error_and_does_not_use_a_seq() -> None:
    dev, host = Connection(Role.DEVICE), Connection(Role.HOST)
    too_many = SampleFrame(0, 0, np.zeros((4, 255), dtype=np.int16))  # 2040 bytes of samples
    with pytest.raises(LocalProtocolError):
        dev.send(too_many)
    host.receive_data(dev.send(Heartbeat(1)))
    drain(host)
    assert host.stats.seq_gaps == 0


def test_receiving_the_wrong_direction_is_counted_not_raised() -> None:
    host = Connection(Role.HOST)
    host.receive_data(Connection(Role.HOST).send(StimCommand(1, 0, 1.0, 300, 50, 0, 100, 0)))
    host.receive_data(Connection(Role.DEVICE).send(StimAck(1)))
    events = drain(host)
    assert isinstance(events[0], ProtocolErrorEvent)
    assert events[0].kind is ErrorKind.WRONG_DIRECTION
    assert events[1:] == [StimAck(1)]
    assert host.stats.wrong_direction == 1


# -- splitting --------------------------------------------------------------------------------


def test_every_split_point_gives_the_same_events() -> None:
    messages, wire = device_stream()
    expected = [key(m) for m in messages]
    for cut in range(len(wire) + 1):
        host = Connection(Role.HOST)
        host.receive_data(wire[:cut])
        events = drain(host)
        host.receive_data(wire[cut:])
        events += drain(host)
        assert [key(e) for e in events] == expected, cut


def test_byte_by_byte_gives_the_same_events() -> None:
    messages, wire = device_stream()
    host = Connection(Role.HOST)
    events: list[Event] = []
    for i in range(len(wire)):
        host.receive_data(wire[i : i + 1])
        events += drain(host)
    assert [key(e) for e in events] == [key(m) for m in messages]
    assert host.stats.frames_ok == len(messages) and host.stats.errors == 0


# -- corruption and resync --------------------------------------------------------------------


def test_flipped_bit_is_a_crc_error_and_the_next_frame_survives() -> None:
    dev, host = Connection(Role.DEVICE), Connection(Role.HOST)
    first = dev.send(Heartbeat(0x11223344))
    second = dev.send(StimAck(9))
    damaged = bytearray(first)
    damaged[first.index(0x44)] ^= 0x04  # a data byte, not a COBS code: only the CRC can tell
    host.receive_data(bytes(damaged) + second)
    events = drain(host)
    assert isinstance(events[0], ProtocolErrorEvent) and events[0].kind is ErrorKind.CRC
    assert events[1:] == [StimAck(9)]
    assert host.stats.crc_errors == 1 and host.stats.frames_ok == 1


def test_any_single_bit_flip_never_raises_and_never_loses_the_next_frame() -> None:
    dev = Connection(Role.DEVICE)
    first = dev.send(device_to_host_examples()[1])
    second = dev.send(StimAck(9))
    for i in range(len(first) - 1):  # flipping the delimiter merges frames: tested elsewhere
        for bit in range(8):
            damaged = bytearray(first)
            damaged[i] ^= 1 << bit
            host = Connection(Role.HOST)
            host.receive_data(bytes(damaged) + second)
            events = drain(host)
            assert events[-1] == StimAck(9), (i, bit)
            assert host.stats.errors >= 1, (i, bit)
            assert not any(isinstance(e, SampleFrame) for e in events), (i, bit)


@pytest.mark.parametrize(
    ("wire", "kind", "counter"),
    [
        (raw_wire(0x55, b""), ErrorKind.UNKNOWN_TYPE, "unknown_type"),
        (raw_wire(0x21, b"\x01\x00\x00"), ErrorKind.MALFORMED, "malformed"),  # truncated body
        (raw_wire(0x10, struct.pack("<IQBB", 0, 0, 2, 3)), ErrorKind.MALFORMED, "malformed"),
        (
            raw_wire(0x21, b"\x01\x00\x00\x00", version=2),
            ErrorKind.UNSUPPORTED_VERSION,
            "unsupported_version",
        ),
        (cobs.encode(bytes(MAX_FRAME_SIZE + 1)) + b"\x00", ErrorKind.OVERSIZE, "oversize"),
        (b"\x55" * 3000 + b"\x00", ErrorKind.OVERSIZE, "oversize"),
        (b"\x07\x01\x02\x00", ErrorKind.COBS, "cobs_errors"),
        (b"\x03\x01\x02\x00", ErrorKind.MALFORMED, "malformed"),  # runt: 2 bytes
    ],
)
def test_remote_errors_are_typed_counted_and_resynced(
    wire: bytes, kind: ErrorKind, counter: str
) -> None:
    host = Connection(Role.HOST)
    host.receive_data(wire + Connection(Role.DEVICE).send(StimAck(5)))
    events = drain(host)
    assert len(events) == 2
    assert isinstance(events[0], ProtocolErrorEvent) and events[0].kind is kind
    assert events[1] == StimAck(5)
    assert getattr(host.stats, counter) == 1
    assert host.stats.errors == 1


# -- hypothesis -------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    for role in Role:
        conn = Connection(role)
        for chunk in chunks:
            conn.receive_data(chunk)
            for event in drain(conn):
                assert event is not None


def frame_spans(wire: bytes) -> list[tuple[int, int]]:
    """(start, index of the delimiter) of each frame in a clean stream."""
    spans, start = [], 0
    for end, byte in enumerate(wire):
        if byte == 0:
            spans.append((start, end))
            start = end + 1
    return spans


@settings(max_examples=300)
@given(st.data())
def test_mutated_stream_recovers_every_intact_frame(data: st.DataObject) -> None:
    messages = device_to_host_examples() * 2
    wire = b"".join(Connection(Role.DEVICE).send(m) for m in messages)
    a = data.draw(st.integers(0, len(wire)), label="start")
    b = data.draw(st.integers(a, min(len(wire), a + 40)), label="end")
    garbage = data.draw(st.binary(max_size=40), label="replacement")
    mutated = wire[:a] + garbage + wire[b:]
    host = Connection(Role.HOST)
    host.receive_data(mutated)
    received = [key(e) for e in drain(host) if not isinstance(e, ProtocolErrorEvent | SampleGap)]
    # A frame survives when neither it nor the delimiter just before it was touched.
    intact = [
        key(m)
        for m, (start, end) in zip(messages, frame_spans(wire), strict=True)
        if b <= start - 1 or a > end
    ]
    it = iter(received)
    assert all(any(r == want for r in it) for want in intact)  # intact is a subsequence


# -- gaps -------------------------------------------------------------------------------------


def frames(*counters: int, n: int = 4) -> bytes:
    dev = Connection(Role.DEVICE)
    zeros = np.zeros((2, n), dtype=np.int16)
    return b"".join(dev.send(SampleFrame(c, c * 500, zeros)) for c in counters)


def test_sample_gap_is_reported_before_the_frame() -> None:
    host = Connection(Role.HOST)
    host.receive_data(frames(0, 4, 20, 24))
    events = drain(host)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SampleFrame", "SampleFrame", "SampleGap", "SampleFrame", "SampleFrame"]
    assert events[2] == SampleGap(expected=8, received=20, missing=12)
    assert host.stats.sample_gaps == 1 and host.stats.samples_lost == 12
    assert host.expected_sample_counter == 28


def test_sample_counter_wraps_without_a_gap_and_gaps_across_the_wrap() -> None:
    top = 2**32 - 4
    host = Connection(Role.HOST)
    host.receive_data(frames(top - 4, top, 0, 4))
    assert not any(isinstance(e, SampleGap) for e in drain(host))
    host = Connection(Role.HOST)
    host.receive_data(frames(top - 4, 6))
    gaps = [e for e in drain(host) if isinstance(e, SampleGap)]
    assert gaps == [SampleGap(expected=top, received=6, missing=10)]


def test_counter_going_backwards_is_a_negative_gap_and_loses_nothing() -> None:
    host = Connection(Role.HOST)
    host.receive_data(frames(100, 104, 50))
    gaps = [e for e in drain(host) if isinstance(e, SampleGap)]
    assert gaps == [SampleGap(expected=108, received=50, missing=-58)]
    assert host.stats.samples_lost == 0 and host.stats.sample_gaps == 1


def test_device_info_restarts_sample_tracking() -> None:
    host = Connection(Role.HOST)
    info = DeviceInfo(1, "1.0.0", "s", 1000.0, ("VM", "VL"), 195, 16)
    host.receive_data(frames(100) + Connection(Role.DEVICE).send(info) + frames(0))
    assert not any(isinstance(e, SampleGap) for e in drain(host))


def test_seq_gaps_are_counted_with_wrap() -> None:
    host = Connection(Role.HOST)
    wire = (
        raw_wire(0x30, b"\x00" * 4, seq=65534)
        + raw_wire(0x30, b"\x00" * 4, seq=65535)
        + raw_wire(0x30, b"\x00" * 4, seq=0)
        + raw_wire(0x30, b"\x00" * 4, seq=3)
    )
    host.receive_data(wire)
    assert len(drain(host)) == 4
    assert host.stats.seq_gaps == 1 and host.stats.frames_lost == 2


def test_sender_seq_wraps_at_u16() -> None:
    dev, host = Connection(Role.DEVICE), Connection(Role.HOST)
    for i in range(70_000):
        wire = dev.send(Heartbeat(i))
        if i % 1000 == 0 or i > 65530:
            host.receive_data(wire)
    drain(host)
    frame = cobs.decode(dev.send(Heartbeat(0))[:-1])
    assert struct.unpack_from("<H", frame, 2)[0] == 70_000 % 65536
