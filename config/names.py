"""The few config facts the command line needs before any settings are loaded: what a pseudonym
looks like, which protocols exist, and the error type. Kept free of pydantic so that `--help` and
argument checks start in a fraction of the time a full settings import takes."""

from __future__ import annotations

import re
from pathlib import Path

# Pseudonymous identifiers only: letters, digits, '-' and '_'. A space is refused on purpose,
# because "Jane Doe" is the most likely thing to be typed into a patient field by mistake.
PSEUDONYM = r"^[A-Za-z0-9_-]{1,32}$"
# A patient id must also hold a digit: a pragmatic guard that no plain name ("JaneDoe") passes.
PATIENT_ID = r"^[A-Za-z_-]*[0-9][A-Za-z0-9_-]*$"

PROTOCOL_DIR = Path(__file__).with_name("protocols")


class ConfigError(Exception):
    """A setting is missing, malformed or out of range. The message names field, value and range."""


def check_patient_id(value: str) -> str:
    """The patient id as given, or ValueError saying what a pseudonymous id looks like."""
    if not re.fullmatch(PATIENT_ID, value) or len(value) > 32:
        raise ValueError(
            f"patient id {value!r} must be a pseudonym, never a name: letters, digits, - and _ "
            "with at least one digit, at most 32 characters (e.g. P-0042)"
        )
    return value


def available_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))
