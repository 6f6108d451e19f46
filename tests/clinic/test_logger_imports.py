"""The clinic logger runs on a server without the station: importing it must not load the
station's numeric stack (scipy) nor the station itself (feedback.app). Counted in imported
modules, in a fresh interpreter, not in seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
import {module}
print("LOADED=" + ",".join(m for m in ("scipy", "feedback.app") if m in sys.modules))
"""


def loaded_by(module: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("LOADED=")]
    return line.removeprefix("LOADED=")


def test_the_clinic_logger_does_not_import_scipy_or_the_station() -> None:
    assert loaded_by("feedback.clinic.logger") == ""


def test_the_probe_sees_the_station_import_them() -> None:
    # Negative control: the station does load them, so an empty answer is not a blind probe.
    assert loaded_by("feedback.app") == "scipy,feedback.app"
