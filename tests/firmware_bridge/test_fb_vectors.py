"""The shared protocol vectors (firmware/vectors/frames.json) on the Python bridge and on the
emulated firmware. The C core runs the same file in tests/firmware_c/test_core_vectors.py.

Negative controls at the end: a codec with one byte wrong, a receiver that ignores the CRC and
an emulated firmware with a looser cap each fail these checks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cobs import cobs

from firmware_bridge import (
    Connection,
    ProtocolErrorEvent,
    Role,
    SampleFrame,
    StimState,
    crc16,
)
from firmware_bridge.codec import encode_body
from firmware_bridge.emulator import EmulatedFirmware, FirmwareLimits
from firmware_bridge.examples import (
    EXAMPLE_INFO,
    device_to_host_examples,
    host_to_device_examples,
    load_vectors,
    message_from_json,
)
from firmware_bridge.framing import encode_frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware_c"))
import scenario

VECTORS = load_vectors()
MESSAGES = VECTORS["messages"]
INVALID = VECTORS["invalid"]
SCENARIOS = VECTORS["scenarios"]


def key(value: object) -> object:
    if isinstance(value, SampleFrame):
        return (value.sample_counter, value.device_time_us, value.samples.tolist())
    return value


def outcome(events: list[object]) -> list[str]:
    """What a vector's `expect` lists: error kinds and message type names, in order."""
    return [e.kind.value if isinstance(e, ProtocolErrorEvent) else type(e).__name__ for e in events]


# -- valid messages -----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", MESSAGES, ids=lambda v: f"{v['from']}-{v['type']}")
def test_bridge_encodes_each_message_to_the_vector_bytes(vector: dict[str, Any]) -> None:
    msg_type, body = encode_body(message_from_json(vector))
    wire = encode_frame(msg_type, vector["seq"], body)
    assert wire.hex(" ") == vector["wire"]
    assert bytes(cobs.decode(wire[:-1])).hex(" ") == vector["frame"]


@pytest.mark.parametrize("vector", MESSAGES, ids=lambda v: f"{v['from']}-{v['type']}")
def test_bridge_decodes_the_vector_bytes_to_the_message(vector: dict[str, Any]) -> None:
    receiver = Connection(Role.HOST if vector["from"] == "device" else Role.DEVICE)
    receiver.receive_data(bytes.fromhex(vector["wire"]))
    assert [key(e) for e in receiver.events()] == [key(message_from_json(vector))]
    frame = bytes.fromhex(vector["frame"])
    assert int.from_bytes(frame[-2:], "little") == crc16(frame[:-2])


def test_examples_module_serves_the_vectors() -> None:
    sent = {m["from"] for m in MESSAGES}
    assert sent == {"device", "host"}
    assert len(device_to_host_examples()) + len(host_to_device_examples()) == len(MESSAGES)
    assert message_from_json(MESSAGES[0]) == EXAMPLE_INFO


def test_every_error_kind_has_a_vector() -> None:
    kinds = {k for v in INVALID for k in v["expect"] if k[0].islower()}
    assert kinds == {
        "crc",
        "cobs",
        "oversize",
        "malformed",
        "unknown_type",
        "unsupported_version",
        "wrong_direction",
    }


# -- invalid byte streams -----------------------------------------------------------------------


def roles(vector: dict[str, Any]) -> list[Role]:
    return {"device": [Role.DEVICE], "host": [Role.HOST], "any": [Role.DEVICE, Role.HOST]}[
        vector["to"]
    ]


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize("vector", INVALID, ids=lambda v: v["name"])
def test_bridge_reports_each_invalid_vector(vector: dict[str, Any], whole: bool) -> None:
    wire = bytes.fromhex(vector["wire"])
    for role in roles(vector):
        conn = Connection(role)
        events: list[object] = []
        chunks = [wire] if whole else [wire[i : i + 1] for i in range(len(wire))]
        for chunk in chunks:
            conn.receive_data(chunk)
            events += list(conn.events())
        assert outcome(events) == vector["expect"], role
        assert conn.stats.errors == sum(1 for k in vector["expect"] if k[0].islower())


@pytest.mark.parametrize(
    "vector", [v for v in INVALID if v["to"] != "host"], ids=lambda v: v["name"]
)
def test_emulated_firmware_counts_each_invalid_vector(vector: dict[str, Any]) -> None:
    fw = EmulatedFirmware(EXAMPLE_INFO, lambda n: np.zeros((2, n)))
    fw.receive_data(bytes.fromhex(vector["wire"]), 0.0)
    errors = [k for k in vector["expect"] if k[0].islower()]
    stats = fw.link_stats
    assert stats.errors == len(errors)
    for kind in set(errors):
        counter = {"crc": "crc_errors", "cobs": "cobs_errors"}.get(kind, kind)
        assert getattr(stats, counter) == errors.count(kind), kind
    assert stats.frames_ok == len(vector["expect"]) - len(errors)


# -- stimulation scenarios ----------------------------------------------------------------------


class Emulated:
    """The emulated firmware behind the scenario runner's interface."""

    def __init__(self, limits: FirmwareLimits | None = None) -> None:
        source = lambda n: np.zeros((2, n))  # noqa: E731
        self.fw = EmulatedFirmware(EXAMPLE_INFO, source, limits or FirmwareLimits())

    def receive(self, data: bytes, now_ms: int) -> bytes:
        return self.fw.receive_data(data, now_ms / 1000)

    def poll(self, now_ms: int) -> bytes:
        return self.fw.poll(now_ms / 1000)

    def set_contact(self, channel: int, ok: bool) -> None:
        self.fw.set_contact(channel, ok)

    def state(self) -> StimState:
        return self.fw.stim_state

    def output(self) -> dict[str, float]:
        return {"amplitude_ma": self.fw.output_ma}


@pytest.mark.parametrize("case", SCENARIOS, ids=lambda s: s["name"])
def test_emulated_firmware_runs_each_scenario(case: dict[str, Any]) -> None:
    scenario.run(Emulated(), case)


def test_the_scenarios_use_the_emulators_caps() -> None:
    """The scenarios probe the caps at their edges; they must be the emulator's caps."""
    lim = FirmwareLimits()
    over = {s["name"]: s["steps"][0].get("send", {}).get("fields") for s in SCENARIOS}
    assert over["amplitude over the cap"]["amplitude_ma"] == pytest.approx(
        lim.max_amplitude_ma + 0.1
    )
    assert over["pulse width over the cap"]["pulse_width_us"] == lim.max_pulse_width_us + 1
    assert over["frequency over the cap"]["frequency_hz"] == lim.max_frequency_hz + 1
    at = over["at the caps is accepted"]
    assert at["hold_ms"] == lim.max_burst_ms and at["frequency_hz"] == lim.max_frequency_hz


# -- negative controls --------------------------------------------------------------------------


def test_control_a_looser_amplitude_cap_fails_the_scenarios() -> None:
    case = next(s for s in SCENARIOS if s["name"] == "amplitude over the cap")
    with pytest.raises(AssertionError):
        scenario.run(Emulated(FirmwareLimits(max_amplitude_ma=80.0)), case)


def test_control_a_longer_watchdog_fails_the_scenarios() -> None:
    case = next(s for s in SCENARIOS if s["name"].startswith("watchdog stops"))
    slow = Emulated()
    slow.fw.watchdog_s = 0.3
    with pytest.raises(AssertionError):
        scenario.run(slow, case)


def test_control_one_wrong_byte_fails_the_encoding_check() -> None:
    vector = next(v for v in MESSAGES if v["type"] == "StimCommand")
    msg_type, body = encode_body(message_from_json(vector))
    wire = bytearray(encode_frame(msg_type, vector["seq"], body))
    wire[6] ^= 0x01
    assert wire.hex(" ") != vector["wire"]


def test_control_a_receiver_without_crc_check_fails_the_crc_vector() -> None:
    vector = next(v for v in INVALID if v["name"] == "crc")
    frame = bytes(cobs.decode(bytes.fromhex(vector["wire"])[:-1]))
    # A receiver that skipped the CRC would hand this frame on as a StimCommand.
    from firmware_bridge.codec import decode_body

    assert type(decode_body(frame[1], frame[4:-2])).__name__ == "StimCommand"
    assert vector["expect"] == ["crc"]
