"""Message bodies: layouts, round trips, and what counts as the caller's error."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import (
    MESSAGE_TYPES,
    DeviceError,
    DeviceInfo,
    LocalProtocolError,
    Message,
    SampleFrame,
    Status,
    StimCommand,
    StimState,
)
from firmware_bridge.codec import decode_body, encode_body
from firmware_bridge.errors import MalformedBody
from firmware_bridge.examples import (
    EXAMPLE_INFO,
    device_to_host_examples,
    host_to_device_examples,
)

ALL = device_to_host_examples() + host_to_device_examples()


def same(a: object, b: object) -> bool:
    if isinstance(a, SampleFrame) and isinstance(b, SampleFrame):
        return (
            a.sample_counter == b.sample_counter
            and a.device_time_us == b.device_time_us
            and np.array_equal(a.samples, b.samples)
            and a.samples.dtype == b.samples.dtype
        )
    return a == b


def test_every_message_type_has_an_example() -> None:
    assert {type(m) for m in ALL} == set(MESSAGE_TYPES)
    assert len(set(MESSAGE_TYPES.values())) == len(MESSAGE_TYPES)


@pytest.mark.parametrize("message", ALL, ids=lambda m: type(m).__name__)
def test_body_round_trip(message: Message) -> None:
    msg_type, body = encode_body(message)
    assert msg_type == MESSAGE_TYPES[type(message)]
    assert same(decode_body(msg_type, body), message)


@pytest.mark.parametrize("message", ALL, ids=lambda m: type(m).__name__)
def test_wrong_length_body_is_malformed(message: Message) -> None:
    msg_type, body = encode_body(message)
    with pytest.raises(MalformedBody):
        decode_body(msg_type, body + b"\x01")
    if body:
        with pytest.raises(MalformedBody):
            decode_body(msg_type, body[:-1])


def test_samples_are_sample_major_interleaved_int16_le() -> None:
    samples = np.array([[1, 2, 3], [-1, -2, 256]], dtype=np.int16)
    _, body = encode_body(SampleFrame(0xFFFFFFFF, 2**40, samples))
    assert body[:14] == bytes.fromhex("ffffffff 0000000000010000 02 03")
    assert body[14:] == bytes.fromhex("0100 ffff 0200 feff 0300 0001")
    decoded = decode_body(0x10, body)
    assert isinstance(decoded, SampleFrame)
    assert decoded.samples.dtype == np.int16 and decoded.samples.shape == (2, 3)
    assert not decoded.samples.flags.writeable  # shared by every consumer: nobody may edit it


def test_samples_accept_other_integer_dtypes_in_range() -> None:
    frame = SampleFrame(0, 0, np.array([[1, -32768, 32767]], dtype=np.int64))
    decoded = decode_body(*encode_body(frame))
    assert isinstance(decoded, SampleFrame)
    assert decoded.samples.tolist() == [[1, -32768, 32767]]


@pytest.mark.parametrize(
    "samples",
    [np.array([[40000]]), np.zeros((2, 3), dtype=np.float32), np.zeros(3, dtype=np.int16)],
)
def test_bad_samples_are_local_errors(samples: np.ndarray) -> None:
    with pytest.raises(LocalProtocolError):
        encode_body(SampleFrame(0, 0, samples))


def test_amplitude_travels_in_tenths_of_a_milliamp() -> None:
    cmd = StimCommand(1, 0, 12.34, 300, 50, 0, 100, 0)
    decoded = decode_body(*encode_body(cmd))
    assert isinstance(decoded, StimCommand)
    assert decoded.amplitude_ma == 12.3
    assert encode_body(cmd)[1][5:7] == (123).to_bytes(2, "little")


@pytest.mark.parametrize(
    "message",
    [
        StimCommand(1, 0, -1.0, 300, 50, 0, 100, 0),
        StimCommand(1, 0, float("nan"), 300, 50, 0, 100, 0),
        StimCommand(1, 256, 1.0, 300, 50, 0, 100, 0),
        StimCommand(2**32, 0, 1.0, 300, 50, 0, 100, 0),
        StimCommand(1, 0, 1.0, 300, 50, 0, 70_000, 0),
        Status(100, (True,) * 33, StimState.IDLE),
        DeviceError(1, "x" * 256),
        DeviceInfo(1, "1.2", "s", 1000.0, ("VM",), 195, 16),
        DeviceInfo(1, "1.2.300", "s", 1000.0, ("VM",), 195, 16),
    ],
)
def test_fields_that_do_not_fit_are_local_errors(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_body(message)


def test_unknown_enum_values_and_bad_utf8_are_malformed() -> None:
    _, status = encode_body(Status(50, (True,), StimState.IDLE))
    with pytest.raises(MalformedBody):
        decode_body(0x11, status[:1] + b"\x09" + status[2:])
    with pytest.raises(MalformedBody):
        decode_body(0x22, (1).to_bytes(4, "little") + b"\x00")  # reason 0 does not exist
    with pytest.raises(MalformedBody):
        decode_body(0x7F, b"\x01\x00\x02\xff\xfe")


def test_device_info_helpers() -> None:
    assert EXAMPLE_INFO.n_channels == 2
    assert EXAMPLE_INFO.lsb_mv == pytest.approx(195e-6)
