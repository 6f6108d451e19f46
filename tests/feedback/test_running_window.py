"""The onset rest window's sums made as its points arrive (kernels.baseline_add_running,
issue 12 item 4: no block a second does the window's work) against the plain computation:
numpy's pairwise sum of the whole row at the window's end, and the window statistics of the
numpy path (`_complete_mean_sd`), to the bit, however the points are split into blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.processing.onset import MAD_TO_SD, OUTLIER_SPREADS, RELEARN_RATIO, _complete_mean_sd

kernels = pytest.importorskip("feedback.processing.kernels")  # (numba installed)
NO_MASK = np.zeros((0, 0), dtype=bool)


def fill(x: np.ndarray, steps: list[int], stride: int = 1) -> tuple[tuple, tuple]:  # type: ignore[type-arg]
    """x fed to the running window in blocks of `steps` (cycled), every `stride`-th sample a
    point; returns the kernel's (points, sorted, last) and (running sums, plan)."""
    rows, n = x.shape
    width = -(-n // stride)
    plan = kernels.running_plan(width)
    window = (np.empty((rows, width)), np.empty((rows, width)), np.empty(rows))
    running = (np.full((rows, plan[0].shape[0], 9), np.nan), plan)  # (NaN: a read unwritten)
    seen, at, k = 0, 0, 0
    while seen < n:
        part = np.ascontiguousarray(x[:, seen : seen + steps[k % len(steps)]])
        k += 1
        skip = -seen % stride
        at += kernels.baseline_add_running(part, NO_MASK, skip, stride, at, window, running)
        seen += part.shape[1]
    assert at == width
    return window, running


def totals(running: tuple) -> list[str]:  # type: ignore[type-arg]
    run, (_, ops, _) = running
    stack = np.empty(ops.shape[0])
    return [kernels._running_total(run[p], ops, stack).hex() for p in range(run.shape[0])]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 1100),
    stride=st.integers(1, 4),
    steps=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    seed=st.integers(0, 2**31),
    outliers=st.booleans(),
)
def test_the_running_sums_are_the_window_sums(
    n: int, stride: int, steps: list[int], seed: int, outliers: bool
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, n)) ** 2 * 10.0 ** rng.integers(-6, 3)
    x[2] = np.round(x[2], 1)  # ties
    if outliers:
        x[1, rng.random(n) < 0.2] += 50.0
    (points, ordered, last), running = fill(x, steps, stride)
    np.testing.assert_array_equal(points, x[:, ::stride])
    np.testing.assert_array_equal(ordered, np.sort(x[:, ::stride], axis=1))
    np.testing.assert_array_equal(last, x[:, -1])
    assert totals(running) == [float(np.add.reduce(row)).hex() for row in points]
    out = mean, sd = np.empty(3), np.empty(3)
    assert kernels.baseline_stats_running(points, ordered, running, MAD_TO_SD, OUTLIER_SPREADS, out)
    want_mean, want_sd = _complete_mean_sd(points, np.sort(points, axis=1))
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(sd, want_sd)


def test_a_nan_point_leaves_the_window_to_the_numpy_path() -> None:
    x = np.ones((2, 40))
    x[1, 7] = np.nan
    (points, ordered, _), running = fill(x, [20])
    assert not kernels.baseline_stats_running(
        points, ordered, running, MAD_TO_SD, OUTLIER_SPREADS, (np.empty(2), np.empty(2))
    )


def test_a_sum_in_another_order_is_seen() -> None:
    """Negative control: the same points summed as they arrive but in another order (the
    blocks reversed, as a running sum that ignored where a point sits would) differ from
    numpy's sum of the row in some bits; so does a plain left-to-right running total."""
    x = np.random.default_rng(3).standard_normal((1, 500)) ** 2
    (points, _, _), running = fill(x, [20])
    want = float(np.add.reduce(points[0])).hex()
    assert totals(running) == [want]
    reversed_blocks = np.concatenate([x[:, i : i + 20] for i in range(480, -1, -20)], axis=1)
    _, shuffled = fill(reversed_blocks, [20])
    assert totals(shuffled) != [want]
    total = 0.0
    for v in points[0].tolist():
        total += v
    assert total.hex() != want


def test_a_window_reused_gives_the_same_statistics() -> None:
    """A finished window's arrays filled again by the next window (onset._Baseline reuse):
    nothing of the first window leaks into the second's figures."""
    rng = np.random.default_rng(5)
    first, second = rng.standard_normal((2, 3, 300)) ** 2
    (points, ordered, last), running = fill(first, [20])
    window = (points, ordered, last)
    at = 0
    for i in range(0, 300, 20):
        part = np.ascontiguousarray(second[:, i : i + 20])
        at += kernels.baseline_add_running(part, NO_MASK, 0, 1, at, window, running)
    assert totals(running) == [float(np.add.reduce(row)).hex() for row in second]
    out = mean, sd = np.empty(3), np.empty(3)
    assert kernels.baseline_stats_running(points, ordered, running, MAD_TO_SD, OUTLIER_SPREADS, out)
    want_mean, want_sd = _complete_mean_sd(second, np.sort(second, axis=1))
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(sd, want_sd)


def test_the_window_ending_add_gives_the_statistics() -> None:
    """kernels.baseline_add_window: nothing until the window's last point, then the
    statistics of `baseline_stats_running` (hence numpy's) in the same call; the constants
    it uses are onset's."""
    assert (kernels.MAD_TO_SD, kernels.OUTLIER_SPREADS) == (MAD_TO_SD, OUTLIER_SPREADS)
    assert kernels.RELEARN_RATIO == RELEARN_RATIO
    x = np.random.default_rng(7).standard_normal((2, 200)) ** 2
    width = 50
    plan = kernels.running_plan(width)
    window = (np.empty((2, width)), np.empty((2, width)), np.empty(2))
    running = (np.empty((2, plan[0].shape[0], 9)), plan)
    stats = mean, sd = np.full(2, -1.0), np.full(2, -1.0)
    codes = []
    for i in range(0, 200, 20):
        part = np.ascontiguousarray(x[:, i : i + 20])
        at = -(-i // 4)
        codes.append(
            kernels.baseline_add_window(part, NO_MASK, -i % 4, 4, at, window, running, stats)
        )
    assert codes == [0] * 9 + [1]
    want_mean, want_sd = _complete_mean_sd(x[:, ::4], np.sort(x[:, ::4], axis=1))
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(sd, want_sd)
    x[1, 196] = np.nan  # a NaN point (stride 4: sample 196 is one): the numpy path decides
    window = (np.empty((2, width)), np.empty((2, width)), np.empty(2))
    for i in range(0, 200, 20):
        part = np.ascontiguousarray(x[:, i : i + 20])
        code = kernels.baseline_add_window(
            part, NO_MASK, -i % 4, 4, -(-i // 4), window, running, stats
        )
    assert code == 2


def test_no_room_for_the_statistics_writes_none() -> None:
    """The points complete with no arrays for the statistics (a caller that did not expect
    the end there): nothing is written, the window reports that it goes on."""
    x = np.random.default_rng(8).standard_normal((2, 40)) ** 2
    plan = kernels.running_plan(40)
    window = (np.empty((2, 40)), np.empty((2, 40)), np.empty(2))
    running = (np.empty((2, plan[0].shape[0], 9)), plan)
    none = (np.zeros(0), np.zeros(0))
    assert kernels.baseline_add_window(x, NO_MASK, 0, 1, 0, window, running, none) == 0


def test_the_kernels_relearn_test_is_the_window_ends() -> None:
    """kernels.block._quieter, which spares the window's end its Python when no row would
    relearn, says what OnsetDetector._window_done's test says, at the boundary too (a
    window's on-threshold exactly RELEARN_RATIO of the one in force does not replace it)."""
    from feedback.processing.kernels.block import _quieter

    k = 3.0
    rng = np.random.default_rng(11)
    cases = [rng.random((3, 4)) for _ in range(200)]
    mean, sd = np.array([1.0, 0.5]), np.array([0.25, 0.0])
    at = (mean + k * sd) / RELEARN_RATIO  # on-levels exactly at the boundary (exact in binary)
    cases += [np.stack([mean, sd, at]), np.stack([mean, sd, np.nextafter(at, np.inf)])]
    for m, s, on in cases:
        rows = zip(m.tolist(), s.tolist(), on.tolist(), strict=True)
        want = any(v > 0 and u + k * v < RELEARN_RATIO * o for u, v, o in rows)
        assert _quieter(m, s, on, k) == want
    assert not _quieter(*cases[-2], k) and _quieter(*cases[-1], k)
