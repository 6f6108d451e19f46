"""Writes frames.json, the shared protocol test vectors: `python firmware/vectors/build_vectors.py`.

frames.json is the reference; this script only records how its bytes were made (with the Python
codec, from the field values below) so a new vector can be added the same way. Every
implementation is tested against the JSON, not against this script:
tests/firmware_bridge/test_fb_vectors.py (bridge and emulated firmware) and
tests/firmware_c/test_core_vectors.py (the C core).

Sections:
  messages   one of every message: fields, the decoded frame (seq 5) and the wire bytes
  invalid    byte streams and what a receiver must make of them, in order: errors by kind
             (firmware_bridge ErrorKind names) and good messages by type
  scenarios  stimulation safety: host messages at given device times, contact changes, and
             the replies the firmware must send (Status frames left out unless asked for)
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cobs import cobs  # noqa: E402

from firmware_bridge.codec import MESSAGE_TYPES  # noqa: E402
from firmware_bridge.framing import crc16, encode_frame  # noqa: E402

SEQ = 5

INFO = {
    "protocol_version": 1,
    "firmware_version": "1.2.3",
    "serial": "VMF-0042",
    "sample_rate_hz": 2000.0,
    "channel_roles": ["VM", "VL"],
    "lsb_nv": 195,
    "adc_bits": 16,
}
STIM = {
    "command_id": 42,
    "channel": 0,
    "amplitude_ma": 25.5,
    "pulse_width_us": 300,
    "frequency_hz": 50,
    "ramp_up_ms": 1000,
    "hold_ms": 5000,
    "ramp_down_ms": 1000,
}

MESSAGES: list[tuple[str, str, dict[str, Any]]] = [
    ("device", "DeviceInfo", INFO),
    (
        "device",
        "SampleFrame",
        {
            "sample_counter": 1000,
            "device_time_us": 500000,
            "samples": [[10, -20, 300, -4000], [1, 2, -3, 32767]],
        },
    ),
    ("device", "Status", {"battery_pct": 87, "contact_ok": [True, False], "stim_state": "HOLD"}),
    ("device", "StimAck", {"command_id": 42}),
    ("device", "StimRefused", {"command_id": 43, "reason": "TOO_SOON"}),
    ("device", "Heartbeat", {"counter": 7}),
    ("device", "EmergencyStopAck", {}),
    ("device", "DeviceError", {"code": 3, "message": "ADC overrun"}),
    ("host", "StimCommand", STIM),
    ("host", "Heartbeat", {"counter": 7}),
    ("host", "EmergencyStop", {}),
    ("host", "EmergencyStopClear", {}),
    ("host", "InfoRequest", {}),
]


def type_id(name: str) -> int:
    return next(v for k, v in MESSAGE_TYPES.items() if k.__name__ == name)


def raw(msg_type: int, body: bytes, seq: int = SEQ, version: int = 1) -> bytes:
    """A frame with a good CRC but any header: COBS-encoded with its delimiter."""
    frame = struct.pack("<BBH", version, msg_type, seq) + body
    frame += struct.pack("<H", crc16(frame))
    return bytes(cobs.encode(frame)) + b"\x00"


def message_vectors() -> list[dict[str, Any]]:
    # Imported here: examples.py reads the JSON this script writes.
    from firmware_bridge.codec import encode_body
    from firmware_bridge.examples import message_from_json

    out = []
    for sender, kind, fields in MESSAGES:
        spec = {"type": kind, "fields": fields}
        msg_type, body = encode_body(message_from_json(spec))
        wire = encode_frame(msg_type, SEQ, body)
        out.append(
            {
                "from": sender,
                **spec,
                "seq": SEQ,
                "frame": bytes(cobs.decode(wire[:-1])).hex(" "),
                "wire": wire.hex(" "),
            }
        )
    return out


def invalid_vectors() -> list[dict[str, Any]]:
    heartbeat = raw(0x30, struct.pack("<I", 7))
    stim_body = bytes.fromhex("2a 00 00 00 00 ff 00 2c 01 32 00 e8 03 88 13 e8 03")
    bad_crc = bytearray(cobs.decode(raw(0x20, stim_body)[:-1]))
    bad_crc[-1] ^= 0x01
    v: list[dict[str, Any]] = []

    def add(name: str, to: str, wire: bytes, expect: list[str], why: str) -> None:
        v.append({"name": name, "to": to, "wire": wire.hex(" "), "expect": expect, "why": why})

    add("crc", "any", bytes(cobs.encode(bytes(bad_crc))) + b"\x00", ["crc"], "last CRC bit flipped")
    add("cobs", "any", bytes.fromhex("04 01 02 00"), ["cobs"], "code 04 promises 3 bytes, 2 come")
    add("runt", "any", bytes.fromhex("03 01 02 00"), ["malformed"], "2 bytes: no room for a CRC")
    add("lone code", "any", bytes.fromhex("01 00"), ["malformed"], "decodes to nothing")
    add(
        "oversize decoded",
        "any",
        b"\x01" * 1026 + b"\x00",
        ["oversize"],
        "1026 encoded bytes (within 1029) decoding to 1025 zeros: over 1024",
    )
    add(
        "oversize no delimiter, then resync",
        "any",
        b"\x05" * 1100 + b"\x00" + heartbeat,
        ["oversize", "Heartbeat"],
        "no 0x00 within 1029 bytes; the next frame decodes",
    )
    add(
        "garbage then a frame",
        "any",
        bytes.fromhex("ff ff 00") + heartbeat,
        ["cobs", "Heartbeat"],
        "resynchronises at the 0x00",
    )
    add("empty frames", "any", b"\x00\x00\x00" + heartbeat, ["Heartbeat"], "lone 0x00s flush")
    add("version 2", "any", raw(0x30, struct.pack("<I", 7), version=2), ["unsupported_version"], "")
    add("unknown type", "any", raw(0x55, b""), ["unknown_type"], "0x55 is no message")
    add("heartbeat too short", "any", raw(0x30, b"\x07\x00\x00"), ["malformed"], "3-byte body")
    add("heartbeat too long", "any", raw(0x30, b"\x07\x00\x00\x00\x00"), ["malformed"], "")
    add("stim command short", "device", raw(0x20, stim_body[:-1]), ["malformed"], "16 bytes")
    add("estop with a body", "device", raw(0x40, b"\x01"), ["malformed"], "must be empty")
    add("long stim command", "device", raw(0x20, stim_body + bytes(200)), ["malformed"], "")
    add("ack sent to a device", "device", raw(0x21, struct.pack("<I", 1)), ["wrong_direction"], "")
    add("samples sent to a device", "device", raw(0x10, bytes(14)), ["wrong_direction"], "")
    add("stim sent to a host", "host", raw(0x20, stim_body), ["wrong_direction"], "")
    add("status bad state", "host", raw(0x11, bytes([50, 9, 1, 1, 0, 0, 0])), ["malformed"], "")
    add(
        "split anywhere",
        "any",
        heartbeat + heartbeat,
        ["Heartbeat", "Heartbeat"],
        "feed it byte by byte or whole: same result",
    )
    return v


def cmd(cid: int, **over: Any) -> dict[str, Any]:
    fields = {**STIM, "command_id": cid, "ramp_up_ms": 200, "hold_ms": 500, "ramp_down_ms": 200}
    fields.update(over)
    return {"type": "StimCommand", "fields": fields}


HB = {"type": "Heartbeat", "fields": {"counter": 1}}


def refused(cid: int, reason: str) -> dict[str, Any]:
    return {"type": "StimRefused", "fields": {"command_id": cid, "reason": reason}}


def ack(cid: int) -> dict[str, Any]:
    return {"type": "StimAck", "fields": {"command_id": cid}}


def scenarios() -> list[dict[str, Any]]:
    """Each step: at `at_ms`, send `send` (or set `contact` [channel, ok], or just poll); the
    firmware's non-Status replies must equal `expect`; `state` is the stim state afterwards."""
    s: list[dict[str, Any]] = []

    def add(name: str, steps: list[dict[str, Any]]) -> None:
        s.append({"name": name, "channels": 2, "steps": steps})

    for name, over, reason in [
        ("amplitude over the cap", {"amplitude_ma": 60.1}, "AMPLITUDE_LIMIT"),
        ("pulse width 0", {"pulse_width_us": 0}, "PULSE_WIDTH_LIMIT"),
        ("pulse width over the cap", {"pulse_width_us": 401}, "PULSE_WIDTH_LIMIT"),
        ("frequency 0", {"frequency_hz": 0}, "FREQUENCY_LIMIT"),
        ("frequency over the cap", {"frequency_hz": 101}, "FREQUENCY_LIMIT"),
        ("burst too long", {"ramp_up_ms": 1, "hold_ms": 9999, "ramp_down_ms": 1}, "BURST_TOO_LONG"),
        (
            "burst of three u16 maxima",
            {"ramp_up_ms": 65535, "hold_ms": 65535, "ramp_down_ms": 65535},
            "BURST_TOO_LONG",
        ),
        ("no such channel", {"channel": 2}, "BAD_CHANNEL"),
        (
            "channel and amplitude both bad: channel first",
            {"channel": 7, "amplitude_ma": 99},
            "BAD_CHANNEL",
        ),
        (
            "amplitude and pulse both bad: amplitude first",
            {"amplitude_ma": 61, "pulse_width_us": 0},
            "AMPLITUDE_LIMIT",
        ),
    ]:
        add(
            name,
            [{"at_ms": 0, "send": cmd(1, **over), "expect": [refused(1, reason)], "state": "IDLE"}],
        )
    add(
        "at the caps is accepted",
        [
            {
                "at_ms": 0,
                "send": cmd(
                    1,
                    amplitude_ma=60.0,
                    pulse_width_us=400,
                    frequency_hz=100,
                    ramp_up_ms=0,
                    hold_ms=10000,
                    ramp_down_ms=0,
                ),
                "expect": [ack(1)],
                "state": "HOLD",
                "output": {"amplitude_ma": 60.0, "pulse_width_us": 400, "frequency_hz": 100},
            },
            {"at_ms": 200, "send": HB, "expect": [HB], "state": "HOLD"},
        ],
    )
    add(
        "burst runs its phases and ends",
        [
            {
                "at_ms": 0,
                "send": cmd(1),
                "expect": [ack(1)],
                "state": "RAMP_UP",
                "output": {"amplitude_ma": 0.0},
            },
            {
                "at_ms": 100,
                "send": HB,
                "expect": [HB],
                "state": "RAMP_UP",
                "output": {"amplitude_ma": 12.7},
            },
            {
                "at_ms": 300,
                "send": HB,
                "expect": [HB],
                "state": "HOLD",
                "output": {"amplitude_ma": 25.5},
            },
            {"at_ms": 500, "send": HB, "expect": [HB], "state": "HOLD"},
            {"at_ms": 700, "send": HB, "expect": [HB], "state": "RAMP_DOWN"},
            {
                "at_ms": 800,
                "send": HB,
                "expect": [HB],
                "state": "RAMP_DOWN",
                "output": {"amplitude_ma": 12.7},
            },
            {"at_ms": 950, "expect": [], "state": "IDLE", "output": {"amplitude_ma": 0.0}},
        ],
    )
    add(
        "busy, then too soon, then allowed after the rest",
        [
            {"at_ms": 0, "send": cmd(1), "expect": [ack(1)], "state": "RAMP_UP"},
            {"at_ms": 100, "send": cmd(2), "expect": [refused(2, "BUSY")], "state": "RAMP_UP"},
            {"at_ms": 200, "send": HB, "expect": [HB]},
            {"at_ms": 400, "send": HB, "expect": [HB]},
            {"at_ms": 600, "send": HB, "expect": [HB]},
            {"at_ms": 800, "send": HB, "expect": [HB]},
            {"at_ms": 1000, "send": cmd(3), "expect": [refused(3, "TOO_SOON")], "state": "IDLE"},
            {"at_ms": 1899, "send": cmd(4), "expect": [refused(4, "TOO_SOON")], "state": "IDLE"},
            {"at_ms": 1900, "send": cmd(5), "expect": [ack(5)], "state": "RAMP_UP"},
        ],
    )
    add(
        "watchdog stops a burst 250 ms after the last host frame",
        [
            {"at_ms": 0, "send": cmd(1, hold_ms=5000), "expect": [ack(1)], "state": "RAMP_UP"},
            {"at_ms": 100, "send": HB, "expect": [HB], "state": "RAMP_UP"},
            {"at_ms": 350, "expect": [], "state": "HOLD"},
            {
                "at_ms": 351,
                "expect": [],
                "state": "STOPPED_WATCHDOG",
                "output": {"amplitude_ma": 0.0},
            },
            {
                "at_ms": 1000,
                "send": cmd(2),
                "expect": [refused(2, "TOO_SOON")],
                "state": "STOPPED_WATCHDOG",
            },
            {"at_ms": 1350, "send": cmd(3), "expect": [ack(3)], "state": "RAMP_UP"},
        ],
    )
    add(
        "garbage does not feed the watchdog",
        [
            {"at_ms": 0, "send": cmd(1, hold_ms=5000), "expect": [ack(1)]},
            {"at_ms": 200, "bytes": "ff ff 00 02 07 00 01 02 03 00", "expect": [], "state": "HOLD"},
            {"at_ms": 251, "expect": [], "state": "STOPPED_WATCHDOG"},
        ],
    )
    add(
        "emergency stop: immediate, latched, cleared explicitly",
        [
            {"at_ms": 0, "send": cmd(1, hold_ms=5000), "expect": [ack(1)]},
            {
                "at_ms": 100,
                "send": {"type": "EmergencyStop"},
                "expect": [{"type": "EmergencyStopAck"}],
                "state": "STOPPED_ESTOP",
                "output": {"amplitude_ma": 0.0},
            },
            {
                "at_ms": 2000,
                "send": cmd(2),
                "expect": [refused(2, "ESTOP_LATCHED")],
                "state": "STOPPED_ESTOP",
            },
            {
                "at_ms": 2100,
                "send": cmd(3, channel=9, amplitude_ma=99),
                "expect": [refused(3, "ESTOP_LATCHED")],
            },
            {"at_ms": 2200, "send": HB, "expect": [HB], "state": "STOPPED_ESTOP"},
            {
                "at_ms": 2300,
                "send": {"type": "EmergencyStopClear"},
                "expect": [],
                "status": "IDLE",
                "state": "IDLE",
            },
            {"at_ms": 2400, "send": cmd(4), "expect": [ack(4)], "state": "RAMP_UP"},
        ],
    )
    add(
        "emergency stop while idle still latches",
        [
            {
                "at_ms": 0,
                "send": {"type": "EmergencyStop"},
                "expect": [{"type": "EmergencyStopAck"}],
                "state": "STOPPED_ESTOP",
            },
            {"at_ms": 100, "send": cmd(1), "expect": [refused(1, "ESTOP_LATCHED")]},
        ],
    )
    add(
        "contact: refused without it, lost mid-burst stops",
        [
            {"at_ms": 0, "contact": [0, False], "expect": []},
            {"at_ms": 10, "send": cmd(1), "expect": [refused(1, "NO_CONTACT")], "state": "IDLE"},
            {"at_ms": 20, "send": cmd(2, channel=1), "expect": [ack(2)], "state": "RAMP_UP"},
            {
                "at_ms": 100,
                "contact": [1, False],
                "expect": [],
                "state": "IDLE",
                "output": {"amplitude_ma": 0.0},
            },
            {"at_ms": 200, "contact": [1, True], "expect": []},
            {"at_ms": 1099, "send": cmd(3, channel=1), "expect": [refused(3, "TOO_SOON")]},
            {"at_ms": 1100, "send": cmd(4, channel=1), "expect": [ack(4)]},
        ],
    )
    add(
        "heartbeat echo and info request",
        [
            {
                "at_ms": 0,
                "send": {"type": "Heartbeat", "fields": {"counter": 4294967295}},
                "expect": [{"type": "Heartbeat", "fields": {"counter": 4294967295}}],
            },
            {"at_ms": 10, "send": {"type": "InfoRequest"}, "expect": [{"type": "DeviceInfo"}]},
        ],
    )
    return s


def main() -> int:
    out = ROOT / "firmware" / "vectors" / "frames.json"
    # Two passes: examples.py reads the messages' fields back from this file.
    doc: dict[str, Any] = {
        "about": "Shared protocol test vectors (docs/protocol.md); see build_vectors.py.",
        "protocol_version": 1,
        "messages": [{"from": s, "type": k, "fields": f} for s, k, f in MESSAGES],
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    from firmware_bridge.examples import load_vectors

    load_vectors.cache_clear()
    doc["messages"] = message_vectors()
    doc["invalid"] = invalid_vectors()
    doc["scenarios"] = scenarios()
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
