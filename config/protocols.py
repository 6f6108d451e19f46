"""Exercise protocols as data: one TOML file per exercise in config/protocols/.

A protocol file holds a `[protocol]` table (timing, sets × reps, progression) and a `[target]`
table (the starting band). `load_settings(protocol=NAME)` layers it over the station's settings;
`load_protocol(NAME)` reads one for the therapist's picker.
"""

from __future__ import annotations

import tomllib
from typing import Any

from pydantic import ValidationError

from config.names import PROTOCOL_DIR, available_protocols
from config.settings import ProtocolSettings, TargetSettings

ALLOWED_TABLES = frozenset({"protocol", "target"})
REACTION_S = 0.3  # the simulated patient starts contracting this long after the work cue
# Simulator keys that make up its contraction script, by what the protocol would set.
SCRIPT_TIMING = frozenset({"first_rest_s", "contract_s", "relax_s", "reps_per_set", "set_rest_s"})
SCRIPT_LEVEL = frozenset({"contraction_pct"})


class ProtocolError(ValueError):
    """An unknown protocol name or a malformed protocol file."""


def read_protocol(name: str) -> dict[str, Any]:
    """The raw tables of protocol `name`, checked for shape (values are validated with settings)."""
    path = PROTOCOL_DIR / f"{name}.toml"
    if "/" in name or not path.is_file():
        raise ProtocolError(
            f"unknown protocol {name!r}; available: {', '.join(available_protocols())}"
        )
    try:
        tree = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{path}: not valid TOML: {exc}") from None
    extra = set(tree) - ALLOWED_TABLES
    if extra:
        raise ProtocolError(f"{path}: only [protocol] and [target] belong here, not {extra}")
    if tree.get("protocol", {}).get("name", name) != name:
        raise ProtocolError(f"{path}: protocol.name must be {name!r}, the file's name")
    tree.setdefault("protocol", {})["name"] = name
    return tree


def load_protocol(name: str) -> tuple[ProtocolSettings, TargetSettings]:
    tree = read_protocol(name)
    try:
        return (
            ProtocolSettings.model_validate(tree["protocol"]),
            TargetSettings.model_validate(tree.get("target", {})),
        )
    except ValidationError as exc:
        raise ProtocolError(f"protocol {name!r}: {exc}") from None


def prescribed_reps(protocol: ProtocolSettings) -> int:
    """Reps the protocol asks for over all its sets; 0 for free practice (none are counted)."""
    return 0 if protocol.kind == "free" else protocol.reps * protocol.sets


def simulator_script(protocol: ProtocolSettings, target: TargetSettings) -> dict[str, Any]:
    """The simulated patient doing `protocol` as told: contracts REACTION_S after each work
    cue until the work period ends, at the centre of the target band, and relaxes through every
    rest and set rest. This is configuration (time and level); the simulator knows no cues."""
    delay = min(REACTION_S, protocol.work_s / 4)
    return {
        "first_rest_s": protocol.ready_s + delay,
        "contract_s": protocol.work_s - delay,
        "relax_s": protocol.rest_s + delay,
        "reps_per_set": protocol.reps,
        "set_rest_s": protocol.set_rest_s + delay,
        "contraction_pct": min(100.0, (target.low_pct + target.high_pct) / 2),
    }
