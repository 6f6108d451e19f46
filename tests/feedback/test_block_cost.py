"""The per-block cost work (issue 12, item 4) keeps every value: the pieces rewritten on plain
floats or incrementally equal the numpy formulas they replace, to the bit. (Whole runs are
compared with the old pipeline in test_pipeline_reference.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from config.settings import ActivationSettings
from feedback.processing import activation
from feedback.processing.activation import ActivationDetector

CHANNELS = ("VM", "VL", "RF")


def batch_session_reference(det: ActivationDetector, before: np.ndarray) -> np.ndarray:
    """The session reference as it was computed before: numpy over the ring's newest frames."""
    width = det._ring.shape[1]
    recent = (det._filled - 1 - np.arange(min(det._k_ref, det._filled))) % width
    frames = det._ring[:, recent]
    valid = ~np.isnan(frames)
    with np.errstate(invalid="ignore", divide="ignore"):
        effort = np.where(valid, frames, 0.0).sum(axis=1) / valid.sum(axis=1)
    out: np.ndarray = np.fmax(before * det._decay, effort)
    return out


@pytest.mark.parametrize(
    ("rest_window_s", "frame_ms", "reference_window_ms"),
    [(20.0, 50.0, 500.0), (2.0, 20.0, 160.0), (2.0, 50.0, 5000.0), (2.0, 5.0, 50.0)],
)
def test_session_reference_equals_the_numpy_formula(
    rest_window_s: float, frame_ms: float, reference_window_ms: float
) -> None:
    """Plain floats per channel, as numpy summed the ring's columns: equal after every frame,
    with unusable frames (NaN) and a reference window longer than the ring (read twice over)."""
    s = ActivationSettings(
        rest_window_s=rest_window_s, frame_ms=frame_ms, reference_window_ms=reference_window_ms
    )
    det = ActivationDetector(s, 1000.0, CHANNELS)
    rng = np.random.default_rng(11)
    ref = np.zeros(len(CHANNELS))
    frames, pos, compared = 0, 0, 0
    while frames < 3 * det._ring.shape[1] + 7:
        n = int(rng.integers(1, det._frame + 1 if rng.random() < 0.9 else 5 * det._frame))
        # Mostly rising, so the reference usually follows the newest frames (not the held
        # peak), with falls now and then.
        scale = (1.0 + pos) * 1e-5 * (0.2 if rng.random() < 0.1 else 1.0)
        env = np.abs(rng.standard_normal((len(CHANNELS), n))) * scale
        usable = rng.random((len(CHANNELS), n)) > (0.9 if rng.random() < 0.2 else 0.0)
        before = det._filled
        det.process(pos, env, None, usable)
        pos += n
        if det._filled != before:
            assert det._filled - before == 1 or n > det._frame
            if det._filled - before == 1:
                ref = batch_session_reference(det, ref)
                assert np.array_equal(np.array(det._session_ref), ref)
                compared += 1
            else:
                ref = np.array(det._session_ref)
            frames = det._filled
    assert compared > 1.5 * det._ring.shape[1]


def test_a_compensated_sum_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: math.fsum (as Python 3.12's sum() compensates) is not what numpy
    gives, and the comparison above sees it."""
    monkeypatch.setattr(activation, "_ordered_sum", lambda values: math.fsum(values))
    with pytest.raises(AssertionError):
        test_session_reference_equals_the_numpy_formula(2.0, 5.0, 50.0)
