"""A calibration asked for during a session: started in the pipeline, followed by a device whose
patient can follow prompts (the demo's simulator), and stored in the patient's profile
(feedback.profiles) only when it passes its checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from config.settings import CalibrationSettings, Settings
from devices.base import Device
from feedback.calibration import CalibrationResult
from feedback.pipeline import Pipeline
from feedback.profiles import profile_path, save_calibration

EventSink = Callable[[str, dict[str, Any]], None]


@runtime_checkable
class FollowsCalibration(Protocol):
    """A device whose patient can follow the calibration's prompts (the simulator does)."""

    def following_calibration(
        self, c: CalibrationSettings
    ) -> contextlib.AbstractContextManager[None]: ...


class LiveCalibration:
    """Mid-session calibrations of one session; `attach` the pipeline when it exists."""

    def __init__(self, device: Device, log_event: EventSink) -> None:
        self._device = device
        self._log = log_event
        self._pipeline: Pipeline | None = None
        self._script: contextlib.AbstractContextManager[None] | None = None

    def attach(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def start(self, settings: Settings) -> None:
        """Calibrate now (Pipeline.start_calibration); a device whose patient can follow the
        prompts does, as in `--calibrate`. Nothing happens while one is running already."""
        if self._pipeline is None:
            raise RuntimeError("no session running")
        if self._pipeline.calibrating:
            return
        self._pipeline.start_calibration()
        if isinstance(self._device, FollowsCalibration):
            self._script = self._device.following_calibration(settings.calibration)
            self._script.__enter__()

    def ended(self, result: CalibrationResult, settings: Settings) -> Settings | None:
        """A calibration ended (the pipeline already uses it when it passed). Passed: stored in
        the profile, logged, and the settings that carry it returned. Else logged as rejected,
        nothing changes, and None."""
        self.close()
        mvc = {c: round(v, 6) for c, v in result.mvc_mv.items()}
        if result.warnings:
            self._log("calibration_rejected", {"warnings": result.warnings, "mvc_mv": mvc})
            return None
        save_calibration(profile_path(settings), result)  # a small file, written atomically
        applied = result.apply(settings)
        rest = {c: round(max(v, 0.0), 6) for c, v in result.rest_mean_mv.items()}
        self._log("calibration", {"mvc_mv": mvc, "rest_mv": rest, "source": "measured"})
        return applied

    def close(self) -> None:
        """The patient's prompts end (a session that ends while calibrating stores nothing)."""
        if self._script is not None:
            self._script.__exit__(None, None, None)
            self._script = None
