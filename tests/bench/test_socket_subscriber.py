"""bench/socket_subscriber.py, the latency bench's second subscriber, against a real Mosquitto.

It must see every message, whole, at any length (a remaining length of one to three bytes),
however the broker's packets fall into `recv` calls; and it must acknowledge QoS 1 the way
aiomqtt does, or the broker stops at its in-flight limit and the bench measures a queue.
Controls: the same subscriber without acknowledgements, and a packet splitter that reads the
remaining length as one byte, each shown failing."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from bench import socket_subscriber
from bench.socket_subscriber import packets
from tests.conftest import MosquittoProcess

SCRIPT = Path(socket_subscriber.__file__)
# Payload sizes across the one-, two- and three-byte remaining lengths (127 and 16,383 bytes).
SIZES = (1, 100, 126, 127, 128, 500, 16_380, 16_384, 40_000)


def one_byte_lengths(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The control splitter: the remaining length read as its first byte only."""
    out, at = [], 0
    while at + 2 <= len(buf) and at + 2 + buf[at + 1] <= len(buf):
        out.append((buf[at], buf[at + 2 : at + 2 + buf[at + 1]]))
        at += 2 + buf[at + 1]
    return out, buf[at:]


def publish_body(payload: bytes, packet_id: int) -> bytes:
    return socket_subscriber._string("vmf/v1/c/s/cue") + packet_id.to_bytes(2, "big") + payload


@pytest.mark.parametrize("variant", ["correct", "one-byte-length"])
def test_packets_come_out_whole_however_the_bytes_are_cut(variant: str) -> None:
    split = packets if variant == "correct" else one_byte_lengths
    bodies = [publish_body(bytes([65 + i % 26]) * n, i + 1) for i, n in enumerate(SIZES)]
    stream = b"".join(b"\x32" + socket_subscriber._length(len(b)) + b for b in bodies)
    for cut in (1, 7, 300, len(stream)):  # recv sizes
        got: list[tuple[int, bytes]] = []
        rest = b""
        for at in range(0, len(stream), cut):
            done, rest = split(rest + stream[at : at + cut])
            got.extend(done)
        whole = got == [(0x32, b) for b in bodies] and rest == b""
        assert whole is (variant == "correct")
        if not whole:
            return
    assert socket_subscriber.publish_fields(0x32, bodies[0]) == (
        "vmf/v1/c/s/cue",
        b"\x00\x01",
        b"A",
    )


def test_a_broken_length_is_refused_not_waited_for() -> None:
    with pytest.raises(ValueError, match="remaining length"):
        packets(b"\x30\xff\xff\xff\xff\x01")


@pytest.mark.parametrize("variant", ["correct", "no-acks"])
async def test_every_qos1_message_arrives_and_is_acknowledged(
    variant: str, mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    ready, lines = tmp_path / "ready", tmp_path / "lines.txt"
    flags = [] if variant == "correct" else ["--no-acks"]
    with lines.open("wb") as out:
        sub = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(mosquitto.port), str(ready), *flags], stdout=out
        )
    try:
        for _ in range(200):
            if ready.exists():
                break
            await asyncio.sleep(0.05)
        assert ready.exists(), "the subscriber never got its SUBACK"
        sent = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            for i in range(60):  # three times the broker's default in-flight limit (20)
                size = SIZES[i % len(SIZES)]
                body = json.dumps({"i": i, "pad": "x" * size})
                sent.append(body)
                await pub.publish(f"peer/{i}", body, qos=1)
            await pub.publish("vmf/v1/c/s/stream", b"\x00\x01binary", qos=1)  # left out
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and lines.read_text().count("\n") < len(sent):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # anything more would have come by now
    finally:
        sub.terminate()
        sub.wait(5)
    got = [line.split(" ", 2) for line in lines.read_text().splitlines()]
    stamps_are_times = all(abs(float(t) - time.time()) < 60 for t, _, _ in got)
    every_one = [(topic, payload) for _, topic, payload in got] == [
        (f"peer/{i}", body) for i, body in enumerate(sent)
    ]
    assert stamps_are_times
    assert every_one is (variant == "correct"), f"{len(got)} of {len(sent)} arrived"


def naive_lengths(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The control splitter for hostile bytes: reads the length byte without checking it is
    there (an IndexError on a lone trailing byte)."""
    out, at = [], 0
    while at < len(buf):
        length = buf[at + 1]
        if at + 2 + length > len(buf):
            break
        out.append((buf[at], buf[at + 2 : at + 2 + length]))
        at += 2 + length
    return out, buf[at:]


@pytest.mark.parametrize("variant", ["correct", "naive"])
def test_hostile_bytes_are_split_or_refused_never_crash(variant: str) -> None:
    """Random bytes, cut at random: the splitter hands back whole packets and the unread rest
    (a suffix of its input, no byte made up), or refuses with ValueError; nothing else."""
    split = packets if variant == "correct" else naive_lengths
    rng = random.Random(12)
    ok = True
    for _ in range(3000):
        buf = rng.randbytes(rng.randrange(0, 64))
        try:
            done, rest = split(buf)
        except ValueError:
            continue
        except Exception:
            ok = False
            break
        taken = len(buf) - len(rest)
        if rest != buf[taken:] or sum(len(body) + 2 for _, body in done) > taken:
            ok = False
            break
    assert ok is (variant == "correct")
