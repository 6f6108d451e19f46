"""docs/protocol.md must stay true: its byte examples decode to the values it states."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
from cobs import cobs

import firmware_bridge
from firmware_bridge import MESSAGE_TYPES, Connection, Role, SampleFrame, crc16, gatt

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCKS = re.findall(r"```hex\n(.*?)```", DOC.read_text(), re.DOTALL)
NAMESPACE = {"np": np, **{n: getattr(firmware_bridge, n) for n in firmware_bridge.__all__}}


def parse(block: str) -> tuple[object, str, bytes, bytes]:
    """(stated value, sender, frame bytes, wire bytes) from one ```hex block."""
    meta: dict[str, str] = {}
    hexes: dict[str, list[str]] = {"frame": [], "wire": []}
    current = ""
    for line in block.splitlines():
        if line.startswith("; "):
            key, _, rest = line[2:].partition(": ")
            meta[key] = rest
        elif line[:1].isspace():
            hexes[current].append(line)
        else:
            current, _, rest = line.partition(":")
            hexes[current].append(rest)
    value = eval(meta["value"], NAMESPACE)
    frame, wire = (bytes.fromhex(" ".join(hexes[k]).replace("|", " ")) for k in ("frame", "wire"))
    return value, meta["from"], frame, wire


def key(value: object) -> object:
    if isinstance(value, SampleFrame):
        return (value.sample_counter, value.device_time_us, value.samples.tolist())
    return value


def test_the_doc_has_an_example_of_every_message() -> None:
    stated = {type(parse(block)[0]) for block in BLOCKS}
    assert stated == set(MESSAGE_TYPES)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split("(")[0][9:])
def test_example_bytes_decode_to_the_stated_value(block: str) -> None:
    value, sender, frame, wire = parse(block)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert bytes(cobs.decode(wire[:-1])) == frame
    assert struct.unpack("<H", frame[-2:])[0] == crc16(frame[:-2])
    assert frame[0] == 1 and frame[1] == MESSAGE_TYPES[type(value)]  # type: ignore[index]
    receiver = Connection(Role.HOST if sender == "device" else Role.DEVICE)
    receiver.receive_data(wire)
    assert [key(e) for e in receiver.events()] == [key(value)]


def test_doc_states_the_gatt_uuids_in_the_code() -> None:
    text = DOC.read_text()
    for uuid in (gatt.SERVICE_UUID, gatt.DEVICE_TO_HOST_UUID, gatt.HOST_TO_DEVICE_UUID):
        assert f"`{uuid}`" in text


def test_doc_examples_are_what_the_generator_writes_today() -> None:
    from firmware_bridge._docgen import refresh

    text = DOC.read_text()
    assert refresh(text) == text, "run: python -m firmware_bridge._docgen docs/protocol.md"
