"""paho_direct: the cue's PUBLISH written to paho's socket at once must be the packet paho would
have written, acknowledged through paho as its own, and never cut into paho's own bytes."""

from __future__ import annotations

import struct
from typing import Any

import paho.mqtt
import pytest
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTv5, MQTTv311

from feedback.outputs import paho_direct
from feedback.outputs.paho_direct import publish_packet, publish_qos1

TOPIC = "vmf/v1/c1/st/cue"


class FakeSocket:
    """A non-blocking socket: takes up to `room` bytes per send (None: all), BlockingIOError
    when full; `inbox` is what the broker sent."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.room: int | None = None
        self.inbox = bytearray()

    def send(self, data: bytes) -> int:
        if self.room == 0:
            raise BlockingIOError
        n = len(data) if self.room is None else min(self.room, len(data))
        if self.room is not None:
            self.room -= n
        self.out += data[:n]
        return n

    def recv(self, n: int) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        chunk = bytes(self.inbox[:n])
        del self.inbox[:n]
        return chunk

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def connected(mqtt5: bool = False) -> tuple[Client, FakeSocket]:
    client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5 if mqtt5 else MQTTv311)
    sock = FakeSocket()
    client._sock = sock  # type: ignore[assignment]
    return client, sock


def test_written_against_the_pinned_paho() -> None:
    """An upgrade of paho turns the direct path off (paho's own send path instead) and fails
    here, so that its internals are checked again before PAHO is raised."""
    assert paho.mqtt.__version__ == paho_direct.PAHO
    assert paho_direct.DIRECT


@pytest.mark.parametrize("mqtt5", [False, True])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("size", [0, 1, 100, 200, 20_000, 3_000_000])
def test_the_packet_is_the_one_paho_writes(mqtt5: bool, retain: bool, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    theirs, sock = connected(mqtt5)
    info = theirs.publish(TOPIC, payload, 1, retain)  # no event loop: paho writes at once
    assert info.rc == 0
    packet = publish_packet(TOPIC.encode(), payload, info.mid, retain, mqtt5)
    assert packet == bytes(sock.out)
    mine, sock = connected(mqtt5)
    assert publish_qos1(mine, TOPIC, payload, retain, mqtt5=mqtt5) == (0, info.mid)
    assert bytes(sock.out) == packet


def test_the_packet_check_catches_a_wrong_length() -> None:
    """Negative control: a one-byte remaining length is right only below 128 bytes."""

    def one_byte_length(topic: bytes, payload: bytes, mid: int) -> bytes:
        remaining = 2 + len(topic) + 2 + len(payload)
        head = bytes((0x32, remaining & 0xFF)) + struct.pack("!H", len(topic))
        return head + topic + struct.pack("!H", mid) + payload

    for size, same in ((10, True), (200, False)):
        client, sock = connected()
        info = client.publish(TOPIC, b"p" * size, 1)
        assert (one_byte_length(TOPIC.encode(), b"p" * size, info.mid) == sock.out) is same


def puback(mid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", mid)


def acknowledged(client: Client, sock: FakeSocket, mid: int) -> list[int]:
    """The packet ids paho's on_publish reports once the broker's PUBACK for `mid` is read."""
    seen: list[int] = []
    client.on_publish = lambda c, u, m, rc, p: seen.append(m)
    sock.inbox += puback(mid)
    client.loop_read()
    return seen


def test_paho_matches_the_puback_to_a_direct_message() -> None:
    client, sock = connected()
    rc, mid = publish_qos1(client, TOPIC, b"cue", False, mqtt5=False)
    assert rc == 0 and client._inflight_messages == 1
    assert acknowledged(client, sock, mid) == [mid]
    assert client._inflight_messages == 0 and not client._out_messages
    # A second message gets the next id, as from paho's own publish.
    assert publish_qos1(client, TOPIC, b"cue", False, mqtt5=False)[1] == mid + 1


def test_the_puback_check_catches_an_unregistered_message() -> None:
    """Negative control: the same bytes written past paho's table are never acknowledged."""
    client, sock = connected()
    mid = client._mid_generate()
    sock.send(publish_packet(TOPIC.encode(), b"cue", mid, False, False))
    assert acknowledged(client, sock, mid) == []


def test_what_the_socket_does_not_take_paho_writes_after() -> None:
    client, sock = connected()
    sock.room = 7
    rc, mid = publish_qos1(client, TOPIC, b"c" * 300, False, mqtt5=False)
    assert rc == 0 and client.want_write()  # the rest is in paho's queue
    sock.room = None
    client.loop_write()
    assert bytes(sock.out) == publish_packet(TOPIC.encode(), b"c" * 300, mid, False, False)
    # Negative control: the rest dropped instead of queued leaves a cut packet on the wire.
    client, sock = connected()
    sock.room = 7
    publish_qos1(client, TOPIC, b"c" * 300, False, mqtt5=False)
    client._out_packet.clear()
    sock.room = None
    client.loop_write()
    assert len(sock.out) == 7


def _after_a_partial_write_of_pahos_own(direct: Any) -> tuple[bytes, bytes]:
    """(what went on the wire, paho's packet then ours) when paho's live message was cut by a
    full socket just before the cue."""
    client, sock = connected()
    sock.room = 3
    live = client.publish("vmf/v1/c1/st/live", b"{}" * 50, 0)
    assert client.want_write()
    sock.room = None
    direct(client)
    client.loop_write()
    theirs = bytes(sock.out)
    client, sock = connected()
    client._last_mid = live.mid - 1  # the same packet ids
    client.publish("vmf/v1/c1/st/live", b"{}" * 50, 0)
    client.publish(TOPIC, b"cue", 1)
    return theirs, bytes(sock.out)


def test_a_direct_message_never_cuts_into_pahos_bytes() -> None:
    wire, expected = _after_a_partial_write_of_pahos_own(
        lambda c: publish_qos1(c, TOPIC, b"cue", False, mqtt5=False)
    )
    assert wire == expected

    def ignoring_pahos_queue(client: Client) -> tuple[int, int]:  # the negative control
        client.want_write = lambda: False  # type: ignore[method-assign]
        return publish_qos1(client, TOPIC, b"cue", False, mqtt5=False)

    wire, expected = _after_a_partial_write_of_pahos_own(ignoring_pahos_queue)
    assert wire != expected


def test_without_the_pinned_paho_it_is_pahos_own_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paho_direct, "DIRECT", False)
    client, sock = connected()
    client.on_socket_register_write = lambda c, u, s: None  # under aiomqtt: queued, not written
    rc, mid = publish_qos1(client, TOPIC, b"cue", False, mqtt5=False)
    assert rc == 0 and not sock.out and client.want_write()
    client.loop_write()
    assert bytes(sock.out) == publish_packet(TOPIC.encode(), b"cue", mid, False, False)


def test_no_connection_is_pahos_error() -> None:
    client = Client(CallbackAPIVersion.VERSION2)
    assert publish_qos1(client, TOPIC, b"cue", False, mqtt5=False)[0] == 4
    assert client.publish(TOPIC, b"cue", 1).rc == 4


def test_a_topic_too_long_for_its_length_field_is_refused() -> None:
    # The packet's topic length has two bytes: a longer topic would make a packet the broker
    # misreads. paho's own publish refuses it too.
    client = Client(CallbackAPIVersion.VERSION2)
    client._sock = object()  # type: ignore[assignment]  # any socket: checked before a write
    with pytest.raises(ValueError, match="65,536"):
        publish_qos1(client, "t" * 65536, b"x", False, mqtt5=False)
