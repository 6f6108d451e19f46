"""The logger's PUBLISH reading path (feedback/clinic/paho_reader.py) reads what paho's own
decoder reads, however the bytes are cut between reads; other packets still go to paho."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from feedback.clinic import paho_reader
from feedback.clinic.paho_reader import BatchReadingClient, MalformedPublish, split_publish

Publish = tuple[bytes, bytes, int, int]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 127, n >> 7
        out.append(b | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: bytes, payload: bytes, qos: int, mid: int, props: bytes = b"\x00") -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += props + payload
    return bytes([0x30 | qos << 1]) + varint(len(body)) + body


def with_properties() -> bytes:
    p = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    p.UserProperty = [("a", "1"), ("b", "2")]
    p.MessageExpiryInterval = 30
    p.ContentType = "application/json"
    p.SubscriptionIdentifier = [7]
    return bytes(p.pack())  # type: ignore[no-untyped-call]


PACKETS = [
    publish(b"vmf/v1/c1/s1/live", b'{"type":"live"}', 0, 0),
    publish(b"vmf/v1/c1/s1/rep", b'{"type":"rep"}', 1, 65535),
    bytes([0xD0, 0]),  # PINGRESP: paho's
    publish(b"vmf/v1/c1/s1/event", b"x" * 200, 1, 3, with_properties()),  # 2-byte length
    publish(b"vmf/v1/c1/\xff\xfe/status", b"", 1, 4),  # topic not UTF-8, empty payload
    publish(b"vmf/v1/c1/s1/cue", bytes(range(256)) * 80, 1, 5),  # 3-byte length
    bytes([0x40, 2, 0, 9]),  # PUBACK of a receipt: paho's
    publish(b"vmf/v1/c1/s1/live", b"{}", 0, 0, with_properties()),
]


def paho_reads(packets: list[bytes]) -> list[Publish]:
    """paho's own decoder on each PUBLISH: the reference."""
    out = []
    for raw in packets:
        if raw[0] & 0xF0 != 0x30:
            continue
        i = 1
        while raw[i] & 128:
            i += 1
        p = _packet.decode_publish(raw[0], raw[i + 1 :], MQTTProtocolVersion.MQTTv5)
        out.append((bytes(p.topic), bytes(p.payload), p.qos, p.mid))
    return out


class FakeSocket:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def recv(self, _n: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)

    def close(self) -> None:
        pass


def read_all(chunks: list[bytes]) -> tuple[list[Publish], list[int]]:
    """What the client hands on for the chunks read one by one, and paho's handled packets."""
    got: list[Publish] = []
    client = BatchReadingClient("t", lambda *p: got.append(p))
    handled: list[int] = []
    handle = client._packet_handle

    def seen() -> MQTTErrorCode:
        handled.append(client._in_packet["command"])
        return handle()

    client._packet_handle = seen  # type: ignore[method-assign]
    client._sock = FakeSocket(list(chunks))  # type: ignore[assignment]
    while client._sock.chunks:  # type: ignore[union-attr]
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert not client._read_buffer  # every packet was whole by the end
    return got, handled


def test_reads_what_paho_reads_cut_anywhere() -> None:
    stream = b"".join(PACKETS)
    expected = paho_reads(PACKETS)
    assert read_all([stream]) == (expected, [0xD0, 0x40])
    # every boundary around the headers (a stride through the 20 kB payload), and 3-way cuts
    n = len(stream)
    for cut in sorted({*range(1, 600), *range(600, n - 600, 37), *range(n - 600, n)}):
        assert read_all([stream[:cut], stream[cut:]])[0] == expected, cut
    third = len(stream) // 3
    for cut in range(1, third, 7):
        chunks = [stream[:cut], stream[cut : cut + third], stream[cut + third :]]
        assert read_all(chunks)[0] == expected, cut


def ignoring_properties(header: int, body: bytes) -> Publish:
    """A reader that forgets MQTT 5 properties: the mistake the test must catch."""
    qos = (header >> 1) & 3
    p = 2 + (body[0] << 8 | body[1])
    mid = body[p] << 8 | body[p + 1] if qos else 0
    return body[2 : 2 + (body[0] << 8 | body[1])], body[p + (2 if qos else 0) :], qos, mid


@pytest.mark.parametrize("split", [split_publish, ignoring_properties])
def test_negative_control_a_reader_without_properties_differs(
    split: Callable[[int, bytes], Publish], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paho_reader, "split_publish", split)
    same = read_all([b"".join(PACKETS)])[0] == paho_reads(PACKETS)
    assert same is (split is split_publish)


def test_malformed_publish_is_a_protocol_error_and_hands_nothing_on() -> None:
    topic = b"vmf/v1/c1/s1/rep"
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", 1) + b"\x20"  # props: 32
    got: list[Publish] = []
    client = BatchReadingClient("t", lambda *p: got.append(p))
    client._sock = FakeSocket([bytes([0x32, len(body)]) + body])  # type: ignore[assignment]
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert got == [] and client._sock is None
    with pytest.raises(MalformedPublish):
        split_publish(0x32, body)


def test_ack_many_writes_pahos_pubacks_in_one_packet() -> None:
    client = BatchReadingClient("t", lambda *p: None)
    queued: list[bytes] = []

    def record(_c: int, packet: bytes | bytearray, _m: int, _q: int, _i: object = None) -> int:
        queued.append(bytes(packet))
        return 0

    client._packet_queue = record  # type: ignore[method-assign,assignment]
    client.ack_many([1, 300, 65535])
    client.ack_many([])
    assert len(queued) == 1
    client._manual_ack = True
    for mid in (1, 300, 65535):
        client.ack(mid, 1)  # paho's own, one packet each
    assert queued[0] == b"".join(queued[1:])


def test_negative_control_the_fuzz_target_catches_a_reader_that_keeps_the_properties(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/fuzz's mqtt_publish target compares the reader with paho's decoder: a reader that
    leaves the properties in the payload fails it on the seed."""
    from tests.fuzz.targets import mqtt_publish, publish_example

    mqtt_publish(publish_example())  # the real reader agrees with paho

    def keeps_properties(header: int, body: bytes) -> tuple[bytes, bytes, int, int]:
        topic, payload, qos, mid = split_publish(header, body)
        return topic, body[len(body) - len(payload) - 6 :], qos, mid

    monkeypatch.setattr(paho_reader, "split_publish", keeps_properties)
    with pytest.raises(AssertionError):
        mqtt_publish(publish_example())
