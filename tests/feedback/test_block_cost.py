"""The per-block cost work (issue 12, item 4) keeps every value: the pieces rewritten on plain
floats or incrementally equal the numpy formulas they replace, to the bit. (Whole runs are
compared with the old pipeline in test_pipeline_reference.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import ActivationSettings
from feedback.processing import activation, fused
from feedback.processing.activation import ActivationDetector
from feedback.processing.onset import _complete_mean_sd
from tests.feedback.test_fast_paths import old_mean_sd

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


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
@pytest.mark.parametrize(
    ("rest_window_s", "frame_ms", "reference_window_ms"),
    [(20.0, 50.0, 500.0), (2.0, 20.0, 160.0), (2.0, 50.0, 5000.0), (2.0, 5.0, 50.0)],
)
def test_session_reference_equals_the_numpy_formula(
    rest_window_s: float, frame_ms: float, reference_window_ms: float, compiled: bool
) -> None:
    """Plain floats per channel (or the compiled frame close, kernels.frame_close), as numpy
    summed the ring's columns: equal after every frame, with unusable frames (NaN) and a
    reference window longer than the ring (read twice over)."""
    s = ActivationSettings(
        rest_window_s=rest_window_s, frame_ms=frame_ms, reference_window_ms=reference_window_ms
    )
    if compiled:
        pytest.importorskip("numba")
        det = ActivationDetector(s, 1000.0, CHANNELS)
        assert det._kernels is not None
    else:
        with fused.reference_path():
            det = ActivationDetector(s, 1000.0, CHANNELS)
        assert det._kernels is None
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
        test_session_reference_equals_the_numpy_formula(2.0, 5.0, 50.0, compiled=False)


def test_a_wrong_compiled_frame_close_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control for the compiled path: a decay off by one part in 10¹⁵."""
    kernels = pytest.importorskip("feedback.processing.kernels")
    real = kernels.frame_close

    def off(*args: object) -> object:
        *rest, (session, k_ref, decay), out = args  # refs = (session reference, k_ref, decay)
        state, ring, ordered, levels = rest
        return real(state, ring, ordered, levels, (session, k_ref, decay * (1 + 1e-15)), out)

    monkeypatch.setattr(kernels, "frame_close", off)
    with pytest.raises(AssertionError):
        test_session_reference_equals_the_numpy_formula(2.0, 5.0, 50.0, compiled=True)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 700),
    levels=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    outliers=st.booleans(),
)
def test_window_median_and_mad_from_the_sorted_rows(
    n: int, levels: int, seed: int, outliers: bool
) -> None:
    """The rest window's statistics read off its sorted rows (the MAD as the narrowest run
    around the median) equal the old full-sort computation to the bit, ties included (few
    distinct values: many equal deviations), with and without points far above the rest."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (3, n)).astype(float) * 0.25 + rng.choice([0.0, 1e-3], (3, n))
    if outliers:
        x[1, rng.random(n) < 0.2] += 50.0
    mean, sd = _complete_mean_sd(x, np.sort(x, axis=1))
    want_mean, want_sd = old_mean_sd(x)
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(sd, want_sd)


def narrowest_run_mad(ordered: np.ndarray, length: int) -> np.ndarray:
    """The smallest, over the runs of `length` sorted points that hold the median, of the
    larger end deviation (`_complete_mean_sd` uses runs of mid + 1 points)."""
    n = ordered.shape[1]
    mid = (n - 1) // 2
    level = ordered[:, mid : mid + 1]
    lo = np.arange(max(0, mid - length + 1), min(mid, n - length) + 1)
    ends = np.maximum(level - ordered[:, lo], ordered[:, lo + length - 1] - level)
    out: np.ndarray = ends.min(axis=1)
    return out


def test_the_narrowest_run_is_the_mad_and_a_wrong_length_is_not() -> None:
    """Negative control for the MAD shortcut: with runs of mid + 1 points it is the deviation
    of rank mid of the full sort; one point shorter or longer, it is not."""
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((20, 501)))
    ordered = np.sort(x, axis=1)
    mid = (x.shape[1] - 1) // 2
    want = np.sort(np.abs(x - ordered[:, mid : mid + 1]), axis=1)[:, mid]
    np.testing.assert_array_equal(narrowest_run_mad(ordered, mid + 1), want)
    for wrong in (mid, mid + 2):
        assert not np.array_equal(narrowest_run_mad(ordered, wrong), want)
