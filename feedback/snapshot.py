"""What a session says about its settings and device: everything locally, much less on the wire.

The `session_start` message goes to the clinic's broker, so it carries only what the clinic needs
to interpret the session (processing, calibration, target, protocol, stimulation limits, device),
never file paths (which often contain a user's name), broker credentials or TLS files. The local
session log keeps the whole settings tree, except the MQTT password.
"""

from __future__ import annotations

from typing import Any

from config.settings import Settings

# Sections of the settings tree the clinic may see, and the keys left out of each.
PUBLISHED_SECTIONS: dict[str, frozenset[str]] = {
    "session": frozenset(),  # pseudonymous ids, side, pain score: the schema requires them
    "device": frozenset({"spec"}),  # a spec may hold a path; the device block says the kind
    "processing": frozenset(),
    "onset": frozenset(),
    "activation": frozenset(),
    "quality": frozenset(),
    "calibration": frozenset({"profile_dir"}),
    "target": frozenset(),
    "protocol": frozenset(),
    "contractions": frozenset(),  # what counts as one contraction (min_on_s, merge_gap_s)
    "stimulation": frozenset(),
    "stim_burst": frozenset(),
}
PATH_SPEC_KINDS = frozenset({"serial", "replay", "file"})


def local_settings(settings: Settings) -> dict[str, Any]:
    """The settings snapshot for the station's own session log: all of it but the password."""
    return settings.model_dump(mode="json", exclude={"mqtt": {"password"}})


def published_settings(settings: Settings) -> dict[str, Any]:
    """The settings snapshot for `session_start`: an allow-list, so a new section stays local
    until someone decides the clinic needs it."""
    tree = settings.model_dump(mode="json")
    return {
        section: {k: v for k, v in tree[section].items() if k not in hidden}
        for section, hidden in PUBLISHED_SECTIONS.items()
    }


def public_spec(spec: str) -> str:
    """A device spec without its file or port path: `replay:/home/jane/x.txt?speed=max` →
    `replay?speed=max`. Names of radio and LSL sources are kept: they identify hardware."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in PATH_SPEC_KINDS:
        return spec
    _, qsep, query = rest.partition("?")
    return kind + (qsep + query if qsep else "")


def published_device(device: dict[str, Any]) -> dict[str, Any]:
    return {**device, "spec": public_spec(str(device.get("spec", "")))}
