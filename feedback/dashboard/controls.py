"""Commands from the dashboard back to the session (plain picklable values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EmergencyStopRequest:
    source: str = "dashboard"


@dataclass(frozen=True, slots=True)
class RearmRequest:
    source: str = "dashboard"


@dataclass(frozen=True, slots=True)
class SetBand:
    low_pct: float
    high_pct: float


@dataclass(frozen=True, slots=True)
class StartStop:
    start: bool


@dataclass(frozen=True, slots=True)
class Calibrate:
    pass


@dataclass(frozen=True, slots=True)
class PickProtocol:
    name: str


Control = EmergencyStopRequest | RearmRequest | SetBand | StartStop | Calibrate | PickProtocol
