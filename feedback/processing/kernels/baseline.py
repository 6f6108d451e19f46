"""The onset rest window (feedback.processing.onset._Baseline): its points kept sorted and
summed as they arrive, and its statistics (median, MAD, then the mean and SD of the points that
are rest) to the bit of the numpy path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from feedback.processing.kernels.common import MAD_TO_SD, OUTLIER_SPREADS, jit
from feedback.processing.kernels.sums import pairwise_plan, plan_sum


@jit
def baseline_add(
    x: Any, usable: Any, skip: int, stride: int, at: int, points: Any, ordered: Any
) -> int:
    """onset._Baseline.add: every `stride`-th sample of x from `skip` (NaN where `usable`,
    when it has x's shape, is false) into points[:, at:], and merged into each row of
    `ordered`, which stays sorted as np.sort sorts (NaN last): the window's end then needs no
    sort. Returns the number of points taken per row."""
    rows, n = x.shape
    masked = usable.shape[0] == rows and usable.shape[1] == n
    taken = len(range(skip, n, stride))
    new = np.empty(taken)
    for p in range(rows):
        for k, j in enumerate(range(skip, n, stride)):
            v = x[p, j]
            if masked and not usable[p, j]:
                v = np.nan
            points[p, at + k] = v
            new[k] = v
        new.sort()  # (NaN last, as np.sort)
        # Merge from the end: each old point moves once, past the new ones above it.
        old, dest = at - 1, at + taken - 1
        for k in range(taken - 1, -1, -1):
            v = new[k]
            while old >= 0 and _after(ordered[p, old], v):
                ordered[p, dest] = ordered[p, old]
                old -= 1
                dest -= 1
            ordered[p, dest] = v
            dest -= 1
    return taken


@jit
def _after(a: float, b: float) -> bool:
    """a sorts after b (NaN after every number)."""
    if a != a:
        return b == b
    return a > b


@jit
def _rest_limit(ordered: Any, mid: int, mad_to_sd: float, spreads: float) -> tuple[float, bool]:
    """One sorted row's outlier limit: the median plus `spreads` robust SDs, the MAD taken as
    the narrowest run of mid + 1 sorted points around the median; keep_all when the spread is
    not positive (every point is rest)."""
    level = ordered[mid]
    best = np.inf
    for lo in range(mid + 1):
        low_end = level - ordered[lo]
        high_end = ordered[lo + mid] - level
        end = high_end if high_end > low_end else low_end  # np.maximum
        if end < best:  # np.minimum.reduce (no NaN here)
            best = end
    spread = mad_to_sd * best
    return level + spreads * spread, not spread > 0


@jit
def baseline_stats(points: Any, ordered: Any, plan: Any, mad_to_sd: float, spreads: float) -> Any:
    """onset._complete_mean_sd for a whole window given its points (arrival order) and the
    same points sorted per row, to the bit: the median, the MAD as the narrowest run of mid + 1
    sorted points around it, then the mean and SD of the points not above median + `spreads`
    robust SDs (all of them when the spread is not positive), summed in arrival order with
    numpy's pairwise sum (`plan`: pairwise_plan of the width). Returns (ok, mean, sd); ok
    is False when a row has a NaN (an unusable sample: the numpy path decides)."""
    rows, width = points.shape
    mean = np.empty(rows)
    sd = np.empty(rows)
    mid = (width - 1) // 2
    row = np.empty(width)
    stack = np.empty(plan[1].shape[0])
    for p in range(rows):
        if ordered[p, width - 1] != ordered[p, width - 1]:
            return False, mean, sd
    for p in range(rows):
        limit, keep_all = _rest_limit(ordered[p], mid, mad_to_sd, spreads)
        count = 0
        for i in range(width):
            kept = keep_all or points[p, i] <= limit
            row[i] = points[p, i] if kept else 0.0
            count += kept
        count = max(count, 1)
        m = plan_sum(row, plan, stack) / count
        for i in range(width):
            v = points[p, i]
            d = v - m
            row[i] = d * d if keep_all or v <= limit else 0.0
        mean[p] = m
        sd[p] = math.sqrt(plan_sum(row, plan, stack) / count)
    return True, mean, sd


def running_plan(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pairwise_plan(width)` and, per point, the leaf it falls in: what `baseline_add_running`
    needs to sum a window's points as they arrive."""
    leaves, ops = pairwise_plan(width)
    leaf_of = np.repeat(np.arange(leaves.shape[0], dtype=np.int64), leaves[:, 1])
    return leaves, ops, leaf_of


@jit
def _running_add(run: Any, leaves: Any, leaf_of: Any, i: int, v: float) -> None:
    """Point i (arrival order) of a row into its leaf's running sum: `run` (leaves, 9) holds
    each leaf's eight accumulators and, in column 8, its sum, built with the operations of
    `_leaf_sum` in its order (the accumulators seeded by the first eight values, the next
    ones added in turn, the eight combined once the last full group of 8 is in, the tail
    added after), so the window's sum is ready when its last point is."""
    leaf = leaf_of[i]
    q = i - leaves[leaf, 0]
    n = leaves[leaf, 1]
    r = run[leaf]
    if n < 8:
        if q == 0:
            r[8] = 0.0
        r[8] += v
        return
    stop = n - n % 8
    if q >= stop:
        r[8] += v
        return
    if q < 8:
        r[q] = v
    else:
        r[q % 8] += v
    if q == stop - 1:
        r[8] = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))


@jit
def _running_total(run: Any, ops: Any, stack: Any) -> float:
    """The leaves' sums of `run` combined as `plan_sum` combines its leaves."""
    top = 0
    for op in ops:
        if op >= 0:
            stack[top] = run[op, 8]
            top += 1
        else:
            stack[top - 2] += stack[top - 1]
            top -= 1
    return stack[0]  # type: ignore[no-any-return]


@jit
def baseline_add_running(
    x: Any, usable: Any, skip: int, stride: int, at: int, window: Any, running: Any
) -> int:
    """`baseline_add` into window = (points, ordered, last), which also sums each row's points
    as they arrive into `running` (rows, leaves, 9) with the plan running = (leaves, ops,
    leaf_of) of `running_plan(width)` (see `_running_add`), and keeps each row's last sample
    of x in `last` (the window's end reads it)."""
    points, ordered, last = window
    run, plan = running
    leaves, _, leaf_of = plan
    taken = baseline_add(x, usable, skip, stride, at, points, ordered)
    rows, n = x.shape
    for p in range(rows):
        for k in range(taken):
            _running_add(run[p], leaves, leaf_of, at + k, points[p, at + k])
        if n:
            last[p] = x[p, n - 1]
    return taken


@jit
def baseline_add_window(
    x: Any, usable: Any, skip: int, stride: int, at: int, window: Any, running: Any, stats: Any
) -> int:
    """`baseline_add_running`, and when the window's last point came in with x, its
    statistics (`baseline_stats_running`) into stats = (mean, sd), made by the caller with a
    value per row (else nothing is written), in the same call. Returns 0: the window's
    points go on; 1: they are complete, `stats` written; 2: complete with a NaN point (the
    numpy path decides)."""
    points, ordered, _ = window
    taken = baseline_add_running(x, usable, skip, stride, at, window, running)
    if at + taken < points.shape[1] or stats[0].shape[0] != points.shape[0]:
        return 0  # (or no room for them: the caller asks for them later)
    if baseline_stats_running(points, ordered, running, MAD_TO_SD, OUTLIER_SPREADS, stats):
        return 1
    return 2


@jit
def _deviation(v: float, m: float, limit: float, keep_all: bool) -> float:
    """A point's term of the SD sum in `baseline_stats`: (v − m)² if kept, else 0.0."""
    d = v - m
    return d * d if keep_all or v <= limit else 0.0


@jit
def _leaf_deviations(a: Any, off: int, n: int, m: float, limit: float, keep_all: bool) -> float:
    """`_leaf_sum` of the `_deviation` terms of a[off : off + n], without writing them out."""
    if n < 8:
        res = 0.0
        for k in range(n):
            res += _deviation(a[off + k], m, limit, keep_all)
        return res
    r0 = _deviation(a[off], m, limit, keep_all)
    r1 = _deviation(a[off + 1], m, limit, keep_all)
    r2 = _deviation(a[off + 2], m, limit, keep_all)
    r3 = _deviation(a[off + 3], m, limit, keep_all)
    r4 = _deviation(a[off + 4], m, limit, keep_all)
    r5 = _deviation(a[off + 5], m, limit, keep_all)
    r6 = _deviation(a[off + 6], m, limit, keep_all)
    r7 = _deviation(a[off + 7], m, limit, keep_all)
    stop = n - n % 8
    for k in range(off + 8, off + stop, 8):
        r0 += _deviation(a[k], m, limit, keep_all)
        r1 += _deviation(a[k + 1], m, limit, keep_all)
        r2 += _deviation(a[k + 2], m, limit, keep_all)
        r3 += _deviation(a[k + 3], m, limit, keep_all)
        r4 += _deviation(a[k + 4], m, limit, keep_all)
        r5 += _deviation(a[k + 5], m, limit, keep_all)
        r6 += _deviation(a[k + 6], m, limit, keep_all)
        r7 += _deviation(a[k + 7], m, limit, keep_all)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for k in range(off + stop, off + n):
        res += _deviation(a[k], m, limit, keep_all)
    return res


@jit
def _deviations_sum(a: Any, plan: Any, stack: Any, m: float, limit: float, keep_all: bool) -> float:
    """`plan_sum` of the `_deviation` terms of `a` (the row `baseline_stats` writes out)."""
    leaves, ops = plan
    top = 0
    for op in ops:
        if op >= 0:
            stack[top] = _leaf_deviations(a, leaves[op, 0], leaves[op, 1], m, limit, keep_all)
            top += 1
        else:
            stack[top - 2] += stack[top - 1]
            top -= 1
    return stack[0]  # type: ignore[no-any-return]


@jit
def baseline_stats_running(
    points: Any, ordered: Any, running: Any, mad_to_sd: float, spreads: float, out: Any
) -> bool:
    """`baseline_stats` with each row's sum of points already made as they arrived
    (`baseline_add_running`; running = (run, plan)): when a row keeps every point (the usual
    rest window) its mean is that sum / width, and the SD's sum runs over the points without
    a row written out. The same values to the bit; out = (mean, sd), arrays the caller
    made. Returns ok (False: a row has a NaN, the numpy path decides)."""
    run, plan = running
    leaves, ops, _ = plan
    mean, sd = out
    rows, width = points.shape
    mid = (width - 1) // 2
    row = np.empty(width)
    stack = np.empty(ops.shape[0])
    for p in range(rows):
        if ordered[p, width - 1] != ordered[p, width - 1]:
            return False
    for p in range(rows):
        limit, keep_all = _rest_limit(ordered[p], mid, mad_to_sd, spreads)
        if keep_all or ordered[p, width - 1] <= limit:  # every point kept
            count = width
            m = _running_total(run[p], ops, stack) / count
        else:
            count = 0
            for i in range(width):
                kept = points[p, i] <= limit
                row[i] = points[p, i] if kept else 0.0
                count += kept
            count = max(count, 1)
            m = plan_sum(row, (leaves, ops), stack) / count
        mean[p] = m
        total = _deviations_sum(points[p], (leaves, ops), stack, m, limit, keep_all)
        sd[p] = math.sqrt(total / count)
    return True
