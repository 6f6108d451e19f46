"""Patient profiles: one JSON file per pseudonymous patient, holding calibrations per side.

`profiles/<patient>.json` under the user data directory (or `calibration.profile_dir`):
{"patient": "P-0001", "calibrations": {"right": {...CalibrationResult...}, "left": {...}}}.
Written atomically (temporary file, then rename) so that a crash never leaves half a profile.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from config.settings import Settings
from feedback.calibration import CalibrationResult


def profile_path(settings: Settings) -> Path:
    base = settings.calibration.profile_dir
    if not base:
        import platformdirs

        base = str(Path(platformdirs.user_data_dir("vm-feedback")) / "profiles")
    return Path(base) / f"{settings.session.patient}.json"


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def save_calibration(path: Path, result: CalibrationResult) -> None:
    data = _read(path)
    data["patient"] = result.patient
    data.setdefault("calibrations", {})[result.side] = result.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def load_calibration(path: Path, settings: Settings) -> tuple[CalibrationResult | None, str]:
    """The stored calibration for this patient and side, if it fits the current chain; the
    second value says what was found (for the console and the session record)."""
    try:
        data = _read(path)
    except (OSError, ValueError) as exc:
        return None, f"profile {path} unreadable: {exc}"
    entry = data.get("calibrations", {}).get(settings.session.side)
    if entry is None:
        return None, f"nothing stored for the {settings.session.side} side in {path}"
    try:
        result = CalibrationResult.from_json(entry)
    except TypeError as exc:
        return None, f"the calibration in {path} is malformed ({exc})"
    if not result.matches(settings.processing):
        return None, (
            f"calibration in {path} was made with other envelope settings; "
            "recalibrate (--calibrate) to use it"
        )
    made = f", from the recording {result.reference}" if result.reference else ""
    mvc = ", ".join(f"{c} {v * 1000:.0f} µV" for c, v in result.mvc_mv.items())
    return result, f"the calibration of {result.created_at}{made} stored in {path}: MVC {mvc}"
