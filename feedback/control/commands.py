"""Therapist commands as typed values: what the MQTT gate and the dashboard both hand the bus.

Every command says where it came from (`source`: "dashboard", "therapist_command", ...) and, when
it came over MQTT, who sent it and its message id (the audit trail of `command_result`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    source: str = "dashboard"
    issuer: str | None = None
    msg_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Start(Origin):
    action: ClassVar[str] = "start"
    pain_before: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop(Origin):
    action: ClassVar[str] = "stop"
    pain_after: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyStop(Origin):
    action: ClassVar[str] = "emergency_stop"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rearm(Origin):
    action: ClassVar[str] = "rearm"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeBand(Origin):
    action: ClassVar[str] = "change_band"
    low_pct: float
    high_pct: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Pain(Origin):
    action: ClassVar[str] = "pain"
    pain_after: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibrate(Origin):
    action: ClassVar[str] = "calibrate"


@dataclass(frozen=True, slots=True, kw_only=True)
class PickProtocol(Origin):
    action: ClassVar[str] = "pick_protocol"
    name: str


Command = Start | Stop | EmergencyStop | Rearm | ChangeBand | Pain | Calibrate | PickProtocol
COMMAND_TYPES: tuple[type[Command], ...] = (
    Start, Stop, EmergencyStop, Rearm, ChangeBand, Pain, Calibrate, PickProtocol
)  # fmt: skip
# What a therapist may send over MQTT (schemas/command.json); the rest are dashboard buttons.
MQTT_ACTIONS = ("start", "stop", "change_band", "emergency_stop", "pain")
SOURCE_MQTT = "therapist_command"


def _opt_int(v: object) -> int | None:
    return None if v is None else int(str(v))


def from_body(body: dict[str, Any]) -> Command:
    """A command body that passed the gate (schema, issuer, freshness) as a typed value."""
    who: dict[str, Any] = {
        "source": SOURCE_MQTT,
        "issuer": body.get("issuer"),
        "msg_id": body.get("msg_id"),
    }
    action = body["action"]
    if action == "start":
        return Start(pain_before=_opt_int(body.get("pain_before")), **who)
    if action == "stop":
        return Stop(pain_after=_opt_int(body.get("pain_after")), **who)
    if action == "emergency_stop":
        return EmergencyStop(**who)
    if action == "change_band":
        return ChangeBand(low_pct=body["low_pct"], high_pct=body["high_pct"], **who)
    if action == "pain":
        return Pain(pain_after=int(body["pain_after"]), **who)
    raise ValueError(f"unknown command action {action!r}; known: {MQTT_ACTIONS}")
