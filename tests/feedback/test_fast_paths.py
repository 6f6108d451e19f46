"""The per-block shortcuts (issue: processing cost) give exactly what the general formulas give.

Each shortcut is taken only for the usual block (no threshold crossed, no flag, one exercise
phase); these tests drive signals that dwell near the levels, so both the shortcut and the
general path run, block splits of every size are mixed, and the results are compared with the
general formula (or the FIR it replaces) on the whole signal.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from feedback.processing.activation import (
    SMALL_ROWS,
    BandDetector,
    DebounceState,
    debounce,
    debounce_levels,
    run_lengths,
    select,
)
from feedback.processing.filters import SOS_KERNEL, MovingAverage, SosFilter
from feedback.processing.onset import MAD_TO_SD, OUTLIER_SPREADS, STATS_POINTS, _Baseline


def split(n: int, rng: np.random.Generator, longest: int) -> list[slice]:
    out, start = [], 0
    while start < n:
        k = int(rng.integers(0, longest + 1))  # empty blocks too
        out.append(slice(start, min(n, start + k)))
        start += k
    return out


def slow_levels(
    x: np.ndarray, on: np.ndarray, off: np.ndarray, n_on: int, n_off: int
) -> np.ndarray:
    carry = DebounceState.zeros(x.shape[0])
    return debounce(x >= on[:, None], x < off[:, None], n_on, n_off, carry)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.sampled_from([1, 3, SMALL_ROWS, SMALL_ROWS + 5]),
    n_on=st.integers(0, 40),
    n_off=st.integers(0, 40),
    seed=st.integers(0, 2**31),
    longest=st.sampled_from([1, 7, 40, 300]),
)
def test_debounce_levels_equals_debounce_for_any_split(
    rows: int, n_on: int, n_off: int, seed: int, longest: int
) -> None:
    rng = np.random.default_rng(seed)
    n = 1500
    # Slow steps between levels with noise that now and then straddles a level.
    steps = np.repeat(rng.uniform(0, 10, (rows, n // 50 + 1)), 50, axis=1)[:, :n]
    x = steps + rng.normal(0, rng.uniform(0, 1.5), (rows, n))
    x[rng.random((rows, n)) < 0.002] = np.nan
    on = rng.uniform(3, 7, rows)
    off = on - rng.uniform(0, 2, rows)
    whole = slow_levels(x, on, off, n_on, n_off)
    carry = DebounceState.zeros(rows)
    parts = [debounce_levels(x[:, s], on, off, n_on, n_off, carry) for s in split(n, rng, longest)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    # Scalar levels broadcast to every row.
    scalar = slow_levels(x, np.full(rows, 5.0), np.full(rows, 4.0), n_on, n_off)
    carry = DebounceState.zeros(rows)
    parts = [debounce_levels(x[:, s], 5.0, 4.0, n_on, n_off, carry) for s in split(n, rng, 60)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), scalar)


@pytest.mark.parametrize("value", [True, False])
def test_run_lengths_of_uniform_blocks(value: bool) -> None:
    carried = np.array([0, 3, 1 << 40])
    mask = np.full((3, 5), value)
    general = np.where(mask, np.arange(5) + 1 + carried[:, None], 0)
    out = run_lengths(mask, carried)
    np.testing.assert_array_equal(out, general)
    assert out.dtype == np.int64


def test_moving_average_matches_the_fir_and_is_split_exact() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5000)) ** 2
    width = 200
    fir = signal.lfilter(np.full(width, 1.0 / width), 1.0, x, axis=1)
    whole = MovingAverage(width, 3).process(x)
    np.testing.assert_allclose(whole, fir, rtol=1e-12, atol=1e-15)
    avg = MovingAverage(width, 3)
    parts = [avg.process(x[:, s]) for s in split(x.shape[1], rng, 90)]
    # Each output sums exactly its own window, so any split gives the same bits.
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    assert (whole >= 0).all()


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    order=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    longest=st.sampled_from([1, 7, 40, 300]),
    single=st.booleans(),
)
def test_sos_kernel_equals_scipy_sosfilt_for_any_split(
    rows: int, order: int, seed: int, longest: int, single: bool
) -> None:
    """The direct C kernel, block by block, gives scipy's `sosfilt` on the whole signal."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (rows, 1200)).astype(np.float32 if single else np.float64)
    sos = signal.butter(order, (20, 450), btype="bandpass", fs=2000.0, output="sos")
    want = signal.sosfilt(sos, x, axis=1)
    for kernel in (SOS_KERNEL, None):
        f = SosFilter(sos, rows, 2000.0, kernel)
        got = np.concatenate([f.process(x[:, s]) for s in split(x.shape[1], rng, longest)], 1)
        assert got.dtype == np.float64 and np.array_equal(got, want)


def test_the_sos_kernel_is_in_use() -> None:
    """scipy's private kernel passed its check at import. If this fails after a SciPy upgrade,
    filtering is still right (the public `sosfilt` takes over) but each filter costs ~70 µs
    more per block: look at `feedback.processing.filters._load_sos_kernel`."""
    assert SOS_KERNEL is not None
    assert SosFilter(np.array([[1.0, 0, 0, 1, 0, 0]]), 1, 1.0)._kernel is SOS_KERNEL


def test_sos_filter_refuses_what_the_kernel_would_not_check() -> None:
    """The C kernel trusts its arguments; a block with another channel count would write past
    the filter's state. SosFilter checks instead, with the public function's kind of error."""
    sos = signal.butter(2, (20, 450), btype="bandpass", fs=2000.0, output="sos")
    f = SosFilter(sos, 2, 2000.0)
    for bad in (np.zeros((3, 20)), np.zeros((1, 20)), np.zeros(20)):
        with pytest.raises(ValueError, match="expected"):
            f.process(bad)
    for bad_sos in (sos[:, :5], sos * 2.0, sos[0]):
        with pytest.raises(ValueError, match="sos must be"):
            SosFilter(bad_sos, 2, 2000.0)


def test_sos_filter_own_refuses_a_block_it_cannot_filter_in_place() -> None:
    f = SosFilter(signal.butter(2, 0.2, output="sos"), 2, 2000.0)
    for bad in (np.zeros((2, 20), dtype=np.float32), np.zeros((2, 40))[:, ::2], np.zeros((3, 20))):
        with pytest.raises(ValueError, match="expected"):
            f.filter_own(bad)


def test_moving_average_with_changing_block_lengths_is_split_exact() -> None:
    """The reused buffer is rebuilt whenever the block length changes, and kept while it does
    not: long runs of one length between changes, empty blocks included."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6000)) ** 2
    whole = MovingAverage(50, 2).process(x)
    avg, parts, start = MovingAverage(50, 2), [], 0
    for length in [20] * 40 + [0, 7, 7, 1, 1, 1] + [20] * 30 + [333] * 5 + [20] * 200:
        parts.append(avg.process(x[:, start : start + length]))
        start += length
    got = np.concatenate(parts, axis=1)
    np.testing.assert_array_equal(got, whole[:, : got.shape[1]])


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 5),
    width=st.integers(1, 60),
    seed=st.integers(0, 2**31),
    same_rank=st.booleans(),
)
def test_select_is_the_sorted_value_at_each_rows_rank(
    rows: int, width: int, seed: int, same_rank: bool
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.choice([0.0, 1.0, 2.5, np.inf, np.nan, -3.0], (rows, width)) + (
        rng.random((rows, width)) < 0.5
    ) * rng.standard_normal((rows, width))
    rank = np.full(rows, rng.integers(0, width)) if same_rank else rng.integers(0, width, rows)
    want = np.sort(x, axis=1)[np.arange(rows), rank]
    np.testing.assert_array_equal(select(x, rank), want)


def old_mean_sd(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The window statistics as they were computed before selection and subsampling on
    arrival: every sample stored, sorted at the window's end."""
    w = samples[:, :: max(1, samples.shape[1] // STATS_POINTS)]
    valid = ~np.isnan(w)
    n = valid.sum(axis=1)
    usable = 2 * n > w.shape[1]
    x = np.where(valid, w, np.inf)
    mid = (np.maximum(n, 1) - 1)[:, None] // 2
    level = np.take_along_axis(np.sort(x, axis=1), mid, axis=1)
    with np.errstate(invalid="ignore"):
        spread = MAD_TO_SD * np.take_along_axis(np.sort(np.abs(x - level), 1), mid, 1)
    rest = valid & ((x <= level + OUTLIER_SPREADS * spread) | ~(spread > 0))
    count = np.maximum(rest.sum(axis=1), 1)
    mean = np.where(rest, x, 0.0).sum(axis=1) / count
    var = np.where(rest, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / count
    return np.where(usable, mean, 0.0), np.where(usable, np.sqrt(var), 0.0)


@settings(max_examples=80, deadline=None)
@given(
    needed=st.sampled_from([1, 7, 499, 500, 1001, 2000, 2003]),
    seed=st.integers(0, 2**31),
    longest=st.sampled_from([1, 20, 300]),
    unusable=st.sampled_from([0.0, 0.2, 0.7]),
)
def test_rest_window_statistics_are_the_full_windows_for_any_split(
    needed: int, seed: int, longest: int, unusable: float
) -> None:
    """Kept as they arrive, only the points that enter the statistics (every k-th sample),
    and found by selection: the same mean and SD, bit for bit, as storing the whole window
    and sorting it, however the window arrives in blocks; a contraction in it included."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal((3, needed))) * 0.01
    x[1, needed // 3 :] += 1.0  # a contraction in the last two thirds of channel 1
    if unusable == 0.0 and needed > 7:
        x[2, 5] = np.nan  # a NaN sample in a window without any unusable mark
    ok = rng.random((3, needed)) >= unusable
    base = _Baseline(needed)
    for s in split(needed, rng, longest):
        base.add(x[:, s], ok[:, s] if unusable else None)
    assert base.seen == needed
    mean, sd = base.mean_sd()
    want_mean, want_sd = old_mean_sd(np.where(ok, x, np.nan))
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(sd, want_sd)
    np.testing.assert_array_equal(base.last(), x[:, -1])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), longest=st.sampled_from([1, 20, 300]))
def test_band_detector_equals_two_separate_edge_switches(seed: int, longest: int) -> None:
    """Both band edges as one 2-row debounce on plain numbers give each edge's own switch."""
    rng = np.random.default_rng(seed)
    pct = np.repeat(rng.choice([5.0, 28.0, 40.0, 58.0, 62.0, 90.0, np.nan], 60), 40)
    pct = pct + rng.normal(0, 1.0, pct.shape) * (rng.random(pct.shape) < 0.3)
    det = BandDetector(30.0, 60.0, 3.0, 5, 9)
    got = np.concatenate([det.process(pct[s]) for s in split(pct.shape[0], rng, longest)])
    low = slow_levels(pct[None], np.array([30.0]), np.array([27.0]), 5, 9)[0]
    high = slow_levels(pct[None], np.array([63.0]), np.array([60.0]), 5, 9)[0]
    want = np.where(high, 2, np.where(low, 1, 0))
    np.testing.assert_array_equal(got, want)


def test_incremental_rest_percentile_through_gaps_and_an_effort() -> None:
    """The activation rest level is kept incrementally (a sorted list of the ring's valid
    frame means per channel). Frames go unusable and usable again while the ring wraps
    several times, one channel makes an effort: after every block the rest equals the batch
    recomputation over the ring (`_low_percentile`, NaN left out; the old rest kept where a
    channel has no valid frame). See also tests/feedback/test_incremental_rest.py."""
    from config.loader import load_settings
    from feedback.processing.activation import ActivationDetector, _low_percentile

    s = load_settings(environ={}).activation.model_copy(
        update={"rest_window_s": 2.0, "frame_ms": 5.0}
    )
    rng = np.random.default_rng(8)
    n = 2000 * 12
    env = np.abs(rng.standard_normal((3, n))) * 0.01 + 0.002
    env[1, 8000:16000] += 0.5  # an effort on one channel
    usable = np.ones((3, n), dtype=bool)
    for start in (3000, 9000, 9600, 15000):  # stretches that leave NaN frames in the ring
        usable[(start // 1000) % 3, start : start + 300] = False
    det = ActivationDetector(s, 2000.0, ("VM", "VL", "RF"))
    width = det._ring.shape[1]
    expected = np.full(3, np.nan)
    with_nan = 0
    for i in range(0, n, 20):
        filled = det._filled
        det.process(i, env[:, i : i + 20], None, usable[:, i : i + 20])
        if det._filled != filled:
            ring = det._ring[:, : min(det._filled, width)]
            with_nan += bool(np.isnan(ring).any())
            batch = _low_percentile(ring, s.rest_percentile)
            expected = np.where(np.isnan(batch), expected, batch)
        np.testing.assert_array_equal(det.rest, expected)
    assert 0 < with_nan < n // 20  # rings with and without NaN frames both came
