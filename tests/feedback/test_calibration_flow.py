"""The guided calibration flow with the simulator: the simulated patient follows the prompts
(so the demo device calibrates), and a calibration that fails its checks is not stored: the
session uses the previous profile (or the configured calibration) and says so."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from config.loader import load_settings
from devices.simulator import SimulatedDevice
from feedback.calibration_flow import calibrated_settings
from feedback.profiles import profile_path


def settings(tmp_path: Path, **more: Any) -> Any:
    return load_settings(
        environ={},
        overrides={
            "calibration.profile_dir": str(tmp_path),
            "calibration.rest_s": 2.0,
            "calibration.mvc_s": 3.0,
            "calibration.mvc_rest_s": 2.0,
            "calibration.mvc_trials": 2,
            **more,
        },
    )


async def run_flow(s: Any, **kw: Any) -> tuple[Any, str, str]:
    out = io.StringIO()
    device = SimulatedDevice(s.simulator, realtime=False)
    async with device:
        new, note = await calibrated_settings(
            s, device, Console(file=out, width=300), calibrate=True, live_view=False, **kw
        )
    return new, note, out.getvalue()


async def test_the_simulated_patient_follows_the_calibration_prompts(tmp_path: Path) -> None:
    s = settings(tmp_path)
    new, note, out = await run_flow(s)
    assert "not clearly above rest" not in out and "new, stored" in note
    # a maximal contraction of the 0.5 mV simulated MVC, not the 45 % of the exercise script
    assert new.calibration.mvc_mv["VM"] == pytest.approx(0.5, rel=0.15)
    stored = json.loads(profile_path(s).read_text())["calibrations"]["right"]
    assert stored["mvc_mv"] == new.calibration.mvc_mv and stored["warnings"] == []


async def test_a_failed_calibration_is_not_stored_and_the_previous_one_is_used(
    tmp_path: Path,
) -> None:
    good, _, _ = await run_flow(settings(tmp_path))
    path = profile_path(good)
    before = path.read_text()
    flat = settings(tmp_path, **{"simulator.mvc_rms_mv": 0.002})  # electrodes off the muscle
    new, note, out = await run_flow(flat)
    assert "not clearly above rest" in out
    assert "NOT stored" in note and "using the calibration of" in note
    assert path.read_text() == before  # the profile is untouched
    assert new.calibration.mvc_mv == good.calibration.mvc_mv  # the previous calibration rules


async def test_a_failed_first_calibration_falls_back_to_the_configured_one(
    tmp_path: Path,
) -> None:
    flat = settings(tmp_path, **{"simulator.mvc_rms_mv": 0.002})
    new, note, _ = await run_flow(flat)
    assert "NOT stored" in note and "using the simulated patient's MVC" in note
    assert not profile_path(flat).exists()
    assert new.calibration.mvc_mv == flat.calibration.mvc_mv


async def test_accept_calibration_stores_a_failed_one_on_request(tmp_path: Path) -> None:
    flat = settings(tmp_path, **{"simulator.mvc_rms_mv": 0.002})
    new, note, _ = await run_flow(flat, accept_failed=True)
    assert "despite failed checks" in note and profile_path(flat).exists()
    assert new.calibration.mvc_mv["VM"] < 0.05
