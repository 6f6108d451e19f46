"""The activation detector's rest level is kept incrementally (a sorted list per channel, one
frame in and one out): it must equal the batch recomputation over the whole ring, to the bit,
whatever the block sizes and however many frames had no usable mean (NaN)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from config.settings import ActivationSettings
from feedback.processing import activation, fused
from feedback.processing.activation import ActivationDetector, _low_percentile

RATE = 1000.0
CHANNELS = ("VM", "VL", "RF")


def _frames_done(det: ActivationDetector) -> int:
    return det._filled


@pytest.mark.parametrize("compiled", [False, True], ids=["numpy", "compiled"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_rest_equals_the_batch_recomputation(seed: int, compiled: bool) -> None:
    compare_with_batch(seed, compiled)


def compare_with_batch(seed: int, compiled: bool = False) -> None:
    """The numpy path's sorted lists, or the compiled frame close's sorted arrays
    (feedback.processing.kernels.frame_close)."""
    settings = ActivationSettings(rest_window_s=2.0, frame_ms=20.0, rest_percentile=10.0)
    if compiled:
        pytest.importorskip("numba")
        det = ActivationDetector(settings, RATE, CHANNELS)
        assert det._kernels is not None
    else:
        with fused.reference_path():
            det = ActivationDetector(settings, RATE, CHANNELS)
    rng = np.random.default_rng(seed)
    width = det._ring.shape[1]
    expected = np.full(len(CHANNELS), np.nan)
    pos, frames_seen = 0, 0
    total = int(5 * settings.rest_window_s * RATE)  # the ring wraps several times
    while pos < total:
        n = int(rng.integers(1, 60))
        env = np.abs(rng.standard_normal((len(CHANNELS), n))) * rng.uniform(0.01, 0.5)
        # Long unusable stretches (a lead off), per channel: frames without a mean (NaN).
        usable = np.ones(env.shape, dtype=bool)
        if rng.random() < 0.3:
            usable[int(rng.integers(len(CHANNELS)))] = False
        det.process(pos, env, None, usable)
        pos += n
        if _frames_done(det) != frames_seen:
            frames_seen = _frames_done(det)
            ring = det._ring[:, : min(frames_seen, width)]
            batch = _low_percentile(ring, settings.rest_percentile)
            expected = np.where(np.isnan(batch), expected, batch)
            # (A block may end several frames; the rest after the last is what is compared.)
            np.testing.assert_array_equal(det.rest, expected)
    assert frames_seen > 2 * width
    if compiled:
        values, lengths = det._ordered
        kept = [values[i, : lengths[i]].tolist() for i in range(len(CHANNELS))]
    else:
        kept = det._sorted
    for row, frames in zip(det._ring, kept, strict=True):
        assert frames == sorted(v for v in row.tolist() if not np.isnan(v))


def test_a_stale_frame_left_in_the_sorted_ring_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: an update that forgets to take out the frame leaving the ring (the
    classic slip of a sliding order statistic) fails the comparison with the batch."""
    real = activation._slide

    def forgetful(frames: list[float], old: float, new: float, pct: float) -> float:
        return real(frames, math.nan, new, pct)

    monkeypatch.setattr(activation, "_slide", forgetful)
    with pytest.raises(AssertionError):
        compare_with_batch(0)


def test_a_stale_frame_in_the_compiled_ring_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control for the compiled path: a frame close that never sees the ring as full
    (so it takes no frame out of the sorted means) fails the comparison."""
    kernels = pytest.importorskip("feedback.processing.kernels")
    real = kernels.frame_close

    def forgetful(state: tuple[object, ...], ring: np.ndarray, *rest: object) -> object:
        sums, counts, frame, filled = state
        return real((sums, counts, frame, filled % ring.shape[1]), ring, *rest)

    monkeypatch.setattr(kernels, "frame_close", forgetful)
    with pytest.raises(AssertionError):
        compare_with_batch(0, compiled=True)
