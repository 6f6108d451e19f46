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
    DebounceState,
    debounce,
    debounce_levels,
    run_lengths,
)
from feedback.processing.filters import SOS_KERNEL, MovingAverage, SosFilter


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
