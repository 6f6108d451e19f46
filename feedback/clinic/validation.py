"""Checks a received MQTT message against the v1 contract: topic, size, JSON and JSON Schema.

The schemas live in `schemas/` (one file per message type, documented in docs/mqtt.md) and are
validated with the `jsonschema` package (Draft 2020-12). `check` either returns the decoded
message or raises `InvalidMessage` whose reason says exactly what was wrong, for the quarantine.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from feedback.outputs.topics import TOPIC_ROOT

MAX_PAYLOAD_BYTES = 64 * 1024

# Message type → the topic leaf it must arrive on.
TOPIC_OF_TYPE: dict[str, str] = {
    "status": "status",
    "session_start": "session",
    "session_end": "session",
    "cue": "cue",
    "rep": "rep",
    "live": "live",
    "gap": "event",
    "calibration": "event",
    "stim_burst": "event",
    "stim_refused": "event",
    "stim_abort": "event",
    "stim_end": "event",
    "stim_estop": "event",
    "stim_rearm": "event",
    "stim_estop_ack": "event",
    "stim_estop_no_ack": "event",
    "stim_send_failed": "event",
    "stim_estop_not_sent": "event",
    "control_failed": "event",
    "stim_driver_error": "event",
    "band_raised": "event",
    "band_set": "event",
    "band_refused": "event",
    "calibrate_requested": "event",
    "protocol_picked": "event",
    "protocol_changed": "event",
    "calibration_rejected": "event",
    "contraction": "event",
    "stim_ack": "event",
    "estop_ack": "event",
    "device_error": "event",
    "quality": "event",
    "command_result": "event",
    "command": "cmd",
}
EVENT_TYPES = frozenset(t for t, leaf in TOPIC_OF_TYPE.items() if leaf == "event")
_TOPIC = re.compile(
    rf"^{re.escape(TOPIC_ROOT)}/([A-Za-z0-9_-]{{1,32}})/([A-Za-z0-9_-]{{1,32}})/([a-z]+)$"
)


class InvalidMessage(Exception):
    """A message that breaks the contract; `reason` goes into the quarantine table."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    clinic: str
    station: str
    leaf: str  # status, session, cue, rep, event, live, cmd
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body["type"])


@functools.cache
def validators() -> dict[str, jsonschema.Draft202012Validator]:
    files = resources.files("feedback.clinic") / "schemas"
    loaded = {
        f.name.removesuffix(".json"): json.loads(f.read_text())
        for f in files.iterdir()
        if f.name.endswith(".json")
    }
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in loaded.values()
    )
    out = {}
    for name, doc in loaded.items():
        jsonschema.Draft202012Validator.check_schema(doc)
        out[name] = jsonschema.Draft202012Validator(doc, registry=registry)
    return out


def check(topic: str, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    if len(payload) > max_bytes:
        raise InvalidMessage(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    m = _TOPIC.match(topic)
    if m is None:
        raise InvalidMessage(f"topic {topic!r} is not vmf/v1/<clinic>/<station>/<kind>")
    clinic, station, leaf = m.groups()
    try:
        body = json.loads(payload, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidMessage(f"not a JSON object but {type(body).__name__}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in TOPIC_OF_TYPE:
        raise InvalidMessage(f"unknown message type {kind!r}")
    if TOPIC_OF_TYPE[kind] != leaf:
        raise InvalidMessage(f"a {kind!r} message belongs on .../{TOPIC_OF_TYPE[kind]}, not {leaf}")
    error = jsonschema.exceptions.best_match(validators()[kind].iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(message)"
        raise InvalidMessage(f"schema {kind}: {where}: {error.message}"[:500])
    return Message(clinic, station, leaf, body)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in this contract")
