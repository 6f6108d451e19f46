"""The montage: where each electrode sat (SENIAM-style), for the session start message, the
record headers and later the BIDS sidecars (issue 16, item 3).

The placement comes from `[placement]` in the configuration; a patient profile's "placement"
entry (same fields, `profiles/<patient>.json`) overrides it, since electrodes are placed per
patient. A channel is matched to its electrode by its role: `VM_L` is the `VM` entry on the
left side unless `VM_L` itself is configured.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.settings import ElectrodePlacement, PlacementSettings, Settings

log = logging.getLogger(__name__)
_SIDE = {"L": "left", "R": "right"}
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


class PlacementError(ValueError):
    """A profile's placement entry that does not validate; the configured one is used instead."""


def profile_placement(path: Path, default: PlacementSettings) -> PlacementSettings:
    """The placement stored in the patient profile at `path`, else `default`. A malformed
    entry raises PlacementError (the caller decides whether to fall back)."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise PlacementError(f"profile {path} unreadable: {exc}") from exc
    entry = data.get("placement") if isinstance(data, dict) else None
    if entry is None:
        return default
    try:
        return PlacementSettings.model_validate(entry)
    except ValidationError as exc:
        raise PlacementError(f"placement in {path} is invalid: {exc}") from exc


def electrode_for(placement: PlacementSettings, channel: str) -> tuple[ElectrodePlacement, str]:
    """The electrode entry for a channel and the side its name gives ("" when it gives none).
    KeyError when nothing is configured for its role."""
    role, _, side = channel.partition("_")
    if channel in placement.electrodes:
        return placement.electrodes[channel], _SIDE.get(side, "")
    return placement.electrodes[role], _SIDE.get(side, "")


def montage(placement: PlacementSettings, channels: tuple[str, ...], side: str) -> dict[str, Any]:
    """The montage dict (JSON-ready): scheme, reference, skin preparation and one entry per
    recorded channel. A channel without a configured electrode is listed with muscle None, so
    the gap in the documentation shows rather than vanishes."""
    electrodes: dict[str, Any] = {}
    for ch in channels:
        try:
            e, ch_side = electrode_for(placement, ch)
        except KeyError:
            electrodes[ch] = {"muscle": None, "side": _SIDE.get(ch.partition("_")[2], side)}
            continue
        electrodes[ch] = {
            "muscle": e.muscle,
            "side": ch_side or side,
            "location": e.location,
            "orientation": e.orientation,
            "inter_electrode_mm": e.inter_electrode_mm,
            "electrode_size_mm": e.electrode_size_mm,
            "material": e.material,
            "kind": e.kind,
        }
    return {
        "scheme": placement.scheme,
        "reference": placement.reference,
        "skin_preparation": placement.skin_preparation,
        "electrodes": electrodes,
    }


def session_montage(settings: Settings, channels: tuple[str, ...]) -> dict[str, Any]:
    """The montage for this session: the profile's placement if it has one, else the config."""
    from feedback.profiles import profile_path

    placement = settings.placement
    try:
        placement = profile_placement(profile_path(settings), placement)
    except PlacementError as exc:
        log.warning("%s; using the configured placement", exc)
    return montage(placement, channels, settings.session.side)


def transducer(entry: dict[str, Any], scheme: str) -> str:
    """EDF's transducer field (80 ASCII characters) for one montage entry, e.g.
    `AgAgCl surface electrode IED 20mm 10mm SENIAM`."""
    if not entry.get("muscle"):
        return ""
    text = (
        f"{entry['material']} {entry['kind']} electrode IED {entry['inter_electrode_mm']:g}mm "
        f"{entry['electrode_size_mm']:g}mm {scheme} {entry['muscle']}"
    )
    return _UNPRINTABLE.sub("_", text)[:80]
