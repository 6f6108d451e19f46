"""The parsers of outside bytes, each as one fuzz target: bytes in, and only the parser's own
typed refusal may come out. Shared by the hypothesis tests (the short run in the normal suite)
and the atheris harness (`make fuzz`, coverage-guided, longer).

A target returns normally or raises `Refused`-like exceptions it declares; anything else is a
finding. `CASES` counts the inputs each target was run on, for the summary line.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion

from feedback.clinic import paho_reader
from feedback.clinic.paho_reader import MalformedPublish
from feedback.clinic.validation import InvalidMessage, check
from feedback.control.gate import CommandBus, CommandGate, Verdict, make_command
from feedback.dashboard.remote_model import RemoteModel
from feedback.outputs.stream import StreamError, decode
from feedback.outputs.topics import Topics, encode

T = Topics("clinic-a", "st-1")
CASES: collections.Counter[str] = collections.Counter()
LEAVES = ("status", "session", "cue", "rep", "event", "live", "cmd", "cmd/estop", "ack")


DOCS = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def stream_example() -> bytes:
    """The decoded hex example of docs/mqtt.md: a valid stream packet."""
    block = DOCS.read_text().split("## Binary live stream")[1].split("```")[1]
    return bytes.fromhex("".join(re.sub(r"^[0-9a-f]{4}  ", "", ln) for ln in block.split("\n")))


def publish_example() -> bytes:
    """A QoS 1 PUBLISH body with a property, after its flags byte (the mqtt_publish target)."""
    topic, props = b"vmf/v1/clinic-a/st-1/rep", b"\x02\x02\x00\x00\x00\x1e"  # expiry 30 s
    return b"\x02" + len(topic).to_bytes(2, "big") + topic + b"\x00\x07" + props + b'{"v":1}'


def _seeds() -> list[bytes]:
    """Valid inputs to start from (the same every call: hypothesis needs that)."""
    fixed: dict[str, Any] = {"msg_id": 1_800_000_000_000, "t": 1.8e9}
    gap = {"v": 1, "type": "gap", "session": "S1", "msg_id": 3, "t": 1.8e9, "from_index": 0,
           "missing": 1}  # fmt: skip
    band = {"low_pct": 20, "high_pct": 50}
    return [
        make_command("emergency_stop", issuer="T-01", session=None, **fixed),
        make_command("change_band", issuer="T-01", session="S1", **band, **fixed),
        make_command("stop", issuer="T-01", session="S1", pain_after=3, **fixed),
        json.dumps(gap).encode(),
        stream_example(),
        publish_example(),
    ]


SEEDS = _seeds()


def _gate() -> CommandGate:
    return CommandGate(T, ["T-01"], CommandBus(), current_session=lambda: "S1")


_GATE = _gate()


def command(data: bytes) -> None:
    """A therapist command on `.../cmd` and on `.../cmd/estop`: always a verdict, and the
    stop's answer always conforms to the contract."""
    CASES["command"] += 1
    for verdict in (_GATE.handle(data), _GATE.handle_estop(data)):
        assert isinstance(verdict, Verdict)
    reply = _GATE.answer_estop(data)
    if reply is not None:
        check(T.ack, encode(reply))


def contract(data: bytes) -> None:
    """A clinic message on any leaf (the first byte picks it): a Message or InvalidMessage."""
    CASES["contract"] += 1
    leaf = LEAVES[data[0] % len(LEAVES)] if data else "event"
    with contextlib.suppress(InvalidMessage):
        check(f"{T.base}/{leaf}", data[1:])


def stream(data: bytes) -> None:
    """A remote-dashboard stream packet: a packet or StreamError."""
    CASES["stream"] += 1
    with contextlib.suppress(StreamError):
        decode(data)


_MODEL = RemoteModel("clinic-a")


def remote(data: bytes) -> None:
    """Anything a remote dashboard receives (the first byte picks the leaf): never raises."""
    CASES["remote"] += 1
    leaf = ("stream", "status", "session", "rep", "event")[data[0] % 5] if data else "stream"
    _MODEL.on_message(f"vmf/v1/clinic-a/st-1/{leaf}", data[1:])


def mqtt_publish(data: bytes) -> None:
    """A PUBLISH as the clinic logger's reader splits it (the first byte's low bits: the
    header's flags): its parts or MalformedPublish, and where paho's own decoder reads the
    same packet, the same parts (the reader skips properties paho would look into)."""
    CASES["mqtt_publish"] += 1
    header, body = 0x30 | (data[0] & 0x0F if data else 0), data[1:]
    try:
        got = paho_reader.split_publish(header, body)
    except MalformedPublish:
        return
    try:
        p = _packet.decode_publish(header, body, MQTTProtocolVersion.MQTTv5)
    except Exception:  # paho refuses what the reader reads past: properties it checks
        return
    assert got == (bytes(p.topic), bytes(p.payload), p.qos, p.mid), (got, p)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "command": command,
    "contract": contract,
    "stream": stream,
    "remote": remote,
    "mqtt_publish": mqtt_publish,
}
