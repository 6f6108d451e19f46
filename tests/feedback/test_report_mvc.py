"""A report carries a measured MVC or none: never the shipped placeholder as a number (a clinic
would read it, and divide by it, as the patient's). `calibrated` and `source` say why not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from config.settings import Settings
from feedback.outputs.base import DeviceSummary, SessionOpened
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.stream_source import StreamOutput
from feedback.session_tally import reported_calibration

ROOT = Path(__file__).resolve().parents[2]
SEATED = ROOT / "tests" / "fixtures" / "data" / "4Nsen.txt.gz"
CHANNELS = ("RF", "BF", "VM", "ST")


def placeholder_as_before(settings: Settings, channels: tuple[str, ...]) -> dict[str, Any]:
    """The report's calibration before this fix: the MVC in the settings, measured or not."""
    cal = settings.calibration
    return {
        "calibrated": cal.calibrated,
        "source": cal.source,
        "mvc_mv": {ch: cal.mvc_mv.get(ch) for ch in channels},
    }


def no_numeric_mvc(calibration: dict[str, Any]) -> bool:
    return all(v is None for v in calibration["mvc_mv"].values())


def with_source(source: str) -> Settings:
    return Settings().model_copy(
        update={"calibration": Settings().calibration.model_copy(update={"source": source})}
    )


@pytest.mark.parametrize("variant", ["correct", "placeholder_as_before"])
def test_an_uncalibrated_report_has_no_numeric_mvc(variant: str) -> None:
    build = reported_calibration if variant == "correct" else placeholder_as_before
    uncalibrated = build(with_source("placeholder"), CHANNELS)
    calibrated = build(with_source("profile"), CHANNELS)
    ok = (
        no_numeric_mvc(uncalibrated)
        and uncalibrated["calibrated"] is False
        and uncalibrated["source"] == "placeholder"
        and calibrated["mvc_mv"] == {"RF": None, "BF": None, "VM": 0.5, "ST": None}
    )
    assert ok is (variant == "correct"), (uncalibrated, calibrated)


def replay_report(tmp_path: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_feedback.py"), "--headless",
         "--device", f"replay:{SEATED}?speed=max", "--report", "r.json",
         "--db", str(tmp_path / "s.db"), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "VMF_CALIBRATION__PROFILE_DIR": str(tmp_path / "profiles")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    return report


def test_a_replays_report_names_the_mvc_only_once_calibrated(tmp_path: Path) -> None:
    """The run a newcomer tries: an uncalibrated replay, then one calibrated from the same
    recording (the same session's summary goes out as `session_end`)."""
    uncalibrated = replay_report(tmp_path)["calibration"]
    assert uncalibrated["calibrated"] is False and uncalibrated["source"] == "placeholder"
    assert no_numeric_mvc(uncalibrated) and set(uncalibrated["mvc_mv"]) == set(CHANNELS)
    calibrated = replay_report(tmp_path, "--calibrate-from", str(SEATED))["calibration"]
    assert calibrated["calibrated"] is True and calibrated["source"] == "recording"
    assert isinstance(calibrated["mvc_mv"]["VM"], float) and calibrated["mvc_mv"]["VM"] > 0


@pytest.mark.parametrize("variant", ["correct", "placeholder_as_before"])
def test_the_live_stream_sends_no_placeholder_mvc(variant: str) -> None:
    """A remote view scales the envelope to % MVC by the stream's MVC unless it is 0 (web/
    therapist.js): the placeholder must go as 0, a measured MVC as itself."""

    def identity_mvc(source: str) -> tuple[float, ...]:
        settings = with_source(source)
        if variant == "placeholder_as_before":  # the MVC counted as measured, as before
            settings = settings.model_copy(update={"calibration": settings.calibration.model_copy(
                update={"source": "configured"})})  # fmt: skip
        out = StreamOutput(cast(MqttPublisher, None), "t", 10.0)
        device = DeviceSummary("replay", "replay", 1000.0, ("VM", "VL"), None, None)
        out.offer(SessionOpened("S1", 0.0, settings, device, "VM", 0.0, False, 0, None))
        assert out.source is not None
        return out.source.identity.mvc_mv

    ok = identity_mvc("placeholder") == (0.0, 0.0) and identity_mvc("profile") == (0.5, 0.5)
    assert ok is (variant == "correct")
