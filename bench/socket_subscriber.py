"""An MQTT subscriber that stamps each message when its bytes come off the socket.

bench_latency's aiomqtt subscriber stamps a message after aiomqtt's own path has run (paho's
parse, its callback, an asyncio queue, the `async for`): on this project's machine that path
adds ~0.4 ms at the median to every message, the peer's as much as the station's. This one
stamps right after `recv` returns, before any parsing, so its figure is when the message
reached the subscriber's process. Both run in the same bench, subscribed to the same topics.

Standard library only, run as a script: `python socket_subscriber.py PORT READY_FILE`. It writes
one line per message, "<receipt time> <topic> <payload>" (the binary stream topic left out),
and makes READY_FILE once the broker has granted the subscriptions. MQTT 3.1.1, QoS 1: every
PUBLISH is acknowledged, as aiomqtt's would be (without acknowledgements the broker stops at
its in-flight limit, 20 messages by default, which is the test's control).
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from pathlib import Path
from typing import TextIO

TOPICS = ("vmf/v1/#", "peer/#")
PUBLISH, SUBACK = 3, 9


def _length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str) -> bytes:
    # protocol name, level 4 (3.1.1), clean session, no keep-alive (the run's PUBACKs are
    # the client's traffic, and a broker with keep-alive 0 never times the client out)
    body = _string("MQTT") + bytes((4, 0x02)) + struct.pack("!H", 0) + _string(client_id)
    return b"\x10" + _length(len(body)) + body


def subscribe_packet(topics: tuple[str, ...]) -> bytes:
    body = struct.pack("!H", 1) + b"".join(_string(t) + b"\x01" for t in topics)
    return b"\x82" + _length(len(body)) + body


def packets(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole packets at the front of `buf` as (first byte, body), and what is left."""
    out: list[tuple[int, bytes]] = []
    at = 0
    while True:
        length, shift, i = 0, 0, at + 1
        while True:
            if i >= len(buf):
                return out, buf[at:]
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
            if shift > 21:  # four bytes at most: a broken stream, not a long packet
                raise ValueError("malformed remaining length")
        if len(buf) < i + length:
            return out, buf[at:]
        out.append((buf[at], buf[i : i + length]))
        at = i + length


def publish_fields(first: int, body: bytes) -> tuple[str, bytes | None, bytes]:
    """(topic, packet id or None at QoS 0, payload) of a PUBLISH."""
    n = struct.unpack_from("!H", body)[0]
    topic, at = body[2 : 2 + n].decode(), 2 + n
    packet_id = None
    if (first >> 1) & 3:
        packet_id, at = body[at : at + 2], at + 2
    return topic, packet_id, body[at:]


def run(port: int, ready: Path, out: TextIO, *, acks: bool = True) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"socket-subscriber-{port}") + subscribe_packet(TOPICS))
    rest = b""
    while data := sock.recv(1 << 16):
        now = time.time()  # first: the stamp is the bytes' arrival
        done, rest = packets(rest + data)
        replies = []
        for first, body in done:
            if first >> 4 == SUBACK:
                ready.touch()
            elif first >> 4 == PUBLISH:
                topic, packet_id, payload = publish_fields(first, body)
                if packet_id is not None and acks:
                    replies.append(b"\x40\x02" + packet_id)
                if not topic.endswith("/stream"):
                    out.write(f"{now} {topic} {payload.decode(errors='replace')}\n")
        if replies:
            sock.sendall(b"".join(replies))
        out.flush()


if __name__ == "__main__":
    run(int(sys.argv[1]), Path(sys.argv[2]), sys.stdout, acks="--no-acks" not in sys.argv)
