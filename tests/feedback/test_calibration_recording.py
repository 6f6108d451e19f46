"""Calibration from a recording's envelope (no I/O): the quietest second gives rest, the
strongest half second the MVC; channels without an effort are left out, and a trained muscle
without one refuses the calibration."""

from __future__ import annotations

import numpy as np
import pytest

from config.loader import load_settings
from feedback.calibration import CalibrationResult
from feedback.calibration_recording import REST_WINDOW_S, from_envelope, replay_spec

RATE = 1000.0


def envelope(efforts: bool, rng: np.random.Generator, seconds: float = 12.0) -> np.ndarray:
    """A rest level of 5 µV (SD 0.5 µV), with three 2 s efforts at 0.2 mV if `efforts`."""
    n = round(seconds * RATE)
    env = 0.005 + rng.normal(0, 0.0005, n)
    if efforts:
        for start in (2.0, 5.0, 8.0):
            env[round(start * RATE) : round((start + 2.0) * RATE)] = 0.2
    return np.abs(env)


def calibrate(vm: bool, bf: bool) -> CalibrationResult:
    rng = np.random.default_rng(7)
    env = np.vstack([envelope(vm, rng), envelope(bf, rng)])
    return from_envelope(env, RATE, ("VM", "BF"), load_settings(environ={}), reference="t.csv")


def test_rest_and_mvc_of_a_recording_with_efforts() -> None:
    r = calibrate(vm=True, bf=True)
    assert r.warnings == [] and r.left_out == [] and r.method == "recording"
    assert r.mvc_mv["VM"] == pytest.approx(0.2)
    assert r.rest_mean_mv["VM"] == pytest.approx(0.005, abs=0.0005)
    assert r.rest_sd_mv["VM"] == pytest.approx(0.0005, rel=0.3)


def test_a_muscle_that_made_no_effort_is_left_out_not_made_up() -> None:
    r = calibrate(vm=True, bf=False)  # the hamstrings in a knee extension trial
    assert r.warnings == [] and r.channels == ["VM"] and "BF" not in r.mvc_mv
    assert len(r.left_out) == 1 and r.left_out[0].startswith("BF: ")


def test_no_effort_of_the_trained_muscle_refuses_the_calibration() -> None:
    r = calibrate(vm=False, bf=True)
    assert len(r.warnings) == 1 and r.warnings[0].startswith("VM: ")
    assert "not clearly above rest" in r.warnings[0]


def test_a_recording_without_the_trained_muscle_is_refused() -> None:
    rng = np.random.default_rng(1)
    env = envelope(True, rng)[None, :]
    r = from_envelope(env, RATE, ("BF",), load_settings(environ={}))
    assert r.warnings and "not in the recording" in r.warnings[0]


def test_too_short_a_recording_is_an_error() -> None:
    env = np.full((1, round(1.5 * REST_WINDOW_S * RATE)), 0.01)
    with pytest.raises(ValueError, match="too short"):
        from_envelope(env, RATE, ("VM",), load_settings(environ={}))


def test_the_spec_is_read_as_fast_as_possible_with_its_channel_mapping() -> None:
    assert replay_spec("a.txt") == "replay:a.txt?speed=max"
    assert replay_spec("replay:a.txt?channels=VM=EMG1") == "replay:a.txt?channels=VM=EMG1&speed=max"
    assert replay_spec("replay:a.txt?speed=1") == "replay:a.txt?speed=1"
