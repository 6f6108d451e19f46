"""One plausible instance of every message, for tests, docs/protocol.md and fake devices.

The instances live in the shared test vectors, firmware/vectors/frames.json, next to the bytes
they must encode to: the Python bridge, the emulated firmware and the C firmware are all checked
against that one file (tests/firmware_bridge/test_fb_vectors.py, tests/firmware_c/), so they
cannot drift apart. `message_from_json` turns a vector's message back into its dataclass.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .frames import (
    DeviceError,
    DeviceInfo,
    EmergencyStop,
    EmergencyStopAck,
    EmergencyStopClear,
    Heartbeat,
    InfoRequest,
    Message,
    RefusalReason,
    SampleFrame,
    Status,
    StimAck,
    StimCommand,
    StimRefused,
    StimState,
)

__all__ = [
    "EXAMPLE_INFO",
    "VECTORS_PATH",
    "device_to_host_examples",
    "host_to_device_examples",
    "load_vectors",
    "message_from_json",
]

VECTORS_PATH = Path(__file__).resolve().parents[1] / "firmware" / "vectors" / "frames.json"

_SIMPLE: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        StimAck,
        Heartbeat,
        EmergencyStop,
        EmergencyStopAck,
        EmergencyStopClear,
        InfoRequest,
        DeviceError,
        StimCommand,
    )
}


@cache
def load_vectors() -> dict[str, Any]:
    """The parsed frames.json (read once)."""
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data


def message_from_json(spec: dict[str, Any]) -> Message:
    """`{"type": "Status", "fields": {...}}` as in frames.json -> the message dataclass."""
    kind, f = spec["type"], dict(spec.get("fields", {}))
    if kind == "DeviceInfo":
        f["channel_roles"] = tuple(f["channel_roles"])
        return DeviceInfo(**f)
    if kind == "SampleFrame":
        samples = np.array(f["samples"], dtype=np.int16).reshape(len(f["samples"]), -1)
        return SampleFrame(f["sample_counter"], f["device_time_us"], samples)
    if kind == "Status":
        return Status(f["battery_pct"], tuple(f["contact_ok"]), StimState[f["stim_state"]])
    if kind == "StimRefused":
        return StimRefused(f["command_id"], RefusalReason[f["reason"]])
    return _SIMPLE[kind](**f)


def _examples(sender: str) -> list[Message]:
    return [message_from_json(v) for v in load_vectors()["messages"] if v["from"] == sender]


# 16-bit ADC over +-6.4 mV at the electrodes: 6.4 mV / 32768 ~= 195 nV per count.
EXAMPLE_INFO = DeviceInfo(
    protocol_version=1,
    firmware_version="1.2.3",
    serial="VMF-0042",
    sample_rate_hz=2000.0,
    channel_roles=("VM", "VL"),
    lsb_nv=195,
    adc_bits=16,
)


def device_to_host_examples() -> list[Message]:
    return _examples("device")


def host_to_device_examples() -> list[Message]:
    return _examples("host")
