"""Compiled per-block kernels (numba) for the chain, the signal quality and the debounce.

Each kernel runs one block over all channels in one call, with the state carried between
blocks in the arrays the numpy path keeps (the SOS `zi` per channel, the moving-RMS history,
the quality's run counters), and computes every value with the operations of that path in the
same order, so the results are the same to the bit:

- the SOS cascade is scipy's `_sosfilt` (direct form II transposed, section after section);
- a sum is numpy's pairwise summation (`pairwise_sum` in loops_utils.h.src: what
  `np.add.reduce` does along a contiguous axis: eight accumulators up to 128 values, halves
  above that), the moving RMS's windows included;
- no fast-math, so LLVM contracts nothing into fused multiply-adds.

numba is imported here only: `feedback.processing.fused` loads this module on first use, so
neither `run_feedback.py --help` nor a caller that only designs filters pays for it. Every
function is compiled once per machine and cached on disk (`cache=True`).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import njit

# numpy's PW_BLOCKSIZE: up to this many values are summed with eight accumulators.
PAIRWISE_BLOCK = 128
# feedback.processing.onset's: the MAD of normal values times this estimates their SD;
# points this many robust SDs above the median are no rest (onset imports them from here
# only when compiled; a test checks the two agree).
MAD_TO_SD = 1.4826
OUTLIER_SPREADS = 5.0

_jit = njit(cache=True, nogil=True)


def numba_version() -> str:
    return str(numba.__version__)


def pairwise_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """How numpy's pairwise sum splits n values (above PAIRWISE_BLOCK a sum is the sum of its
    two halves, the first a multiple of 8): the leaves (start, length) in order and, in
    post-order, the program `windowed_sums` runs (a leaf's index, or -1: add the top two).
    Computed once per window width, in Python: a recursive jitted function does not load
    reliably from numba's cache."""
    leaves: list[tuple[int, int]] = []
    ops: list[int] = []

    def walk(start: int, length: int) -> None:
        if length <= PAIRWISE_BLOCK:
            ops.append(len(leaves))
            leaves.append((start, length))
            return
        half = length // 2
        half -= half % 8
        walk(start, half)
        walk(start + half, length - half)
        ops.append(-1)

    walk(0, n)
    return np.array(leaves, dtype=np.int64).reshape(-1, 2), np.array(ops, dtype=np.int64)


@_jit
def _leaf_sums(a: Any, off: int, n: int, count: int, out: Any) -> None:
    """out[i] = numpy's pairwise sum of a[off + i : off + i + n] for i < count, n at most
    PAIRWISE_BLOCK (loops_utils.h.src), with the same operations in the same order.

    Below 8 values: from 0.0, left to right. Otherwise eight accumulators, the j-th summing
    a[lo + j], a[lo + j + 8], ... left to right: for window i that sequence depends on i + j
    only, so each of the count + 7 sequences is summed once and shared by the windows."""
    if n < 8:
        for i in range(count):
            res = 0.0
            for k in range(n):
                res += a[off + i + k]
            out[i] = res
        return
    terms = n // 8
    # Term by term across the sequences (each still summed left to right): independent
    # additions, which LLVM vectorises, instead of one long dependent chain per sequence.
    seq = a[off : off + count + 7].copy()
    for q in range(1, terms):
        base = off + 8 * q
        for t in range(count + 7):
            seq[t] += a[base + t]
    stop = 8 * terms
    for i in range(count):
        res = ((seq[i] + seq[i + 1]) + (seq[i + 2] + seq[i + 3])) + (
            (seq[i + 4] + seq[i + 5]) + (seq[i + 6] + seq[i + 7])
        )
        for k in range(stop, n):
            res += a[off + i + k]
        out[i] = res


@_jit
def _leaf_sum(a: Any, off: int, n: int) -> float:
    """`_leaf_sums` for one window, its accumulators as scalars (no array made)."""
    if n < 8:
        res = 0.0
        for k in range(n):
            res += a[off + k]
        return res
    r0, r1, r2, r3 = a[off], a[off + 1], a[off + 2], a[off + 3]
    r4, r5, r6, r7 = a[off + 4], a[off + 5], a[off + 6], a[off + 7]
    stop = n - n % 8
    for k in range(off + 8, off + stop, 8):
        r0 += a[k]
        r1 += a[k + 1]
        r2 += a[k + 2]
        r3 += a[k + 3]
        r4 += a[k + 4]
        r5 += a[k + 5]
        r6 += a[k + 6]
        r7 += a[k + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for k in range(off + stop, off + n):
        res += a[k]
    return res  # type: ignore[no-any-return]


@_jit
def plan_sum(a: Any, plan: Any, stack: Any) -> float:
    """np.add.reduce(a[:width]) to the bit, with the plan `pairwise_plan(width)` gives and a
    scratch `stack` of at least len(plan[1]) values."""
    leaves, ops = plan
    top = 0
    for op in ops:
        if op >= 0:
            stack[top] = _leaf_sum(a, leaves[op, 0], leaves[op, 1])
            top += 1
        else:
            stack[top - 2] += stack[top - 1]
            top -= 1
    return stack[0]  # type: ignore[no-any-return]


@_jit
def windowed_sums(a: Any, plan: Any, count: int, out: Any) -> None:
    """out[i] = np.add.reduce(a[i : i + width]) for i < count, to the bit, with the plan
    `pairwise_plan(width)` gives."""
    leaves, ops = plan
    stack = np.empty((ops.shape[0], count))
    top = 0
    for op in ops:
        if op >= 0:
            _leaf_sums(a, leaves[op, 0], leaves[op, 1], count, stack[top])
            top += 1
        else:
            for i in range(count):
                stack[top - 2, i] += stack[top - 1, i]
            top -= 1
    for i in range(count):
        out[i] = stack[0, i]


@_jit
def cascade(sos: Any, y: Any, state: Any) -> None:
    """scipy's `_sosfilt` on (rows, n) float64 `y` in place, one section at a time over the
    whole row (each section's output depends only on its input and its state, so the values
    are those of the sample-major loop; its state stays in registers)."""
    for p in range(y.shape[0]):
        row = y[p]
        for s in range(sos.shape[0]):
            b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 4], sos[s, 5]
            z0, z1 = state[p, s, 0], state[p, s, 1]
            for i in range(row.shape[0]):
                cur = row[i]
                new = b0 * cur + z0
                z0 = b1 * cur - a1 * new + z1
                z1 = b2 * cur - a2 * new
                row[i] = new
            state[p, s, 0], state[p, s, 1] = z0, z1


@_jit
def _percent(envelope: Any, rest: Any, span: Any, pct: Any) -> None:
    """100 · max(envelope − rest, 0) / span, as the numpy path computes it (NaN kept)."""
    for p in range(envelope.shape[0]):
        for i in range(envelope.shape[1]):
            d = envelope[p, i] - rest[p]
            if d < 0.0:
                d = 0.0
            d *= 100.0
            pct[p, i] = d / span[p]


@_jit
def chain_rms(
    raw: Any, sos: Any, state: Any, history: Any, plan: Any, scale: Any, out: Any
) -> None:
    """Band-pass, moving RMS over `history.shape[1] + 1` samples (the squares of the last
    ones carried in `history`; `plan` the pairwise_plan of that width), % MVC (scale = (rest,
    span) per row), into out = (filtered, envelope, pct), arrays the caller made (cheaper
    than arrays made here and boxed on return)."""
    rows, n = raw.shape
    filtered, envelope, pct = out
    for p in range(rows):
        for i in range(n):
            filtered[p, i] = raw[p, i]
    cascade(sos, filtered, state)
    keep = history.shape[1]
    width = keep + 1
    ext = np.empty(keep + n)
    sums = np.empty(n)
    for p in range(rows):
        for k in range(keep):
            ext[k] = history[p, k]
        for i in range(n):
            v = filtered[p, i]
            ext[keep + i] = v * v
        windowed_sums(ext, plan, n, sums)
        for i in range(n):
            envelope[p, i] = math.sqrt(sums[i] / width)
        for k in range(keep):
            history[p, k] = ext[n + k]
    _percent(envelope, scale[0], scale[1], pct)


@_jit
def chain_lowpass(
    raw: Any, sos: Any, state: Any, lp_sos: Any, lp_state: Any, scale: Any, out: Any
) -> None:
    """Band-pass, low-passed rectified envelope (never below 0), % MVC, as `chain_rms`."""
    rows, n = raw.shape
    filtered, envelope, pct = out
    for p in range(rows):
        for i in range(n):
            filtered[p, i] = raw[p, i]
    cascade(sos, filtered, state)
    for p in range(rows):
        for i in range(n):
            envelope[p, i] = abs(filtered[p, i])
    cascade(lp_sos, envelope, lp_state)
    for p in range(rows):
        for i in range(n):
            if envelope[p, i] < 0.0:
                envelope[p, i] = 0.0
    _percent(envelope, scale[0], scale[1], pct)


@_jit
def _biquad(c: Any, z: Any, x: float) -> tuple[float, float, float]:
    """One sample through one section (coefficients c, state z = (z0, z1) as scalars, so that
    a row's states stay in registers); returns (y, z0, z1), the operations of `cascade`."""
    y = c[0] * x + z[0]
    return y, c[1] * x - c[4] * y + z[1], c[2] * x - c[5] * y


@_jit
def _held_flags(s0: int, s1: int, s2: int, s3: int, hold: int) -> int:
    """FLAT | CLIP | MAINS | MOTION for the flags raised within `hold` samples."""
    f = 0
    if s0 <= hold:
        f |= 1
    if s1 <= hold:
        f |= 2
    if s2 <= hold:
        f |= 4
    if s3 <= hold:
        f |= 8
    return f


@_jit
def _over(power: float, band_power: float, ratio: float, floor: float) -> bool:
    """power ≥ max(ratio · band power, floor), NaN failing (np.maximum keeps a NaN)."""
    limit = ratio * band_power
    if limit < floor:
        limit = floor
    return power >= limit


@_jit
def quality_flags(
    raw: Any,
    filtered: Any,
    filters: Any,
    states: Any,
    levels: Any,
    counts: Any,
    last_raw: Any,
    same: Any,
    since: Any,
    out: Any,
) -> None:
    """feedback.processing.quality.SignalQuality.process for one block: the held flags
    into `out`, uint8 (rows, n), an array the caller made.

    filters = (mains sos (2 sections) or an empty one, LF sos (2 sections), smoothing sos
    (1 section)) and states their (rows, sections, 2) states, the smoothing's for 3·rows
    (band, mains, LF powers); levels = (clip, flat power, mains ratio², motion ratio², mains
    floor, motion floor); counts = (samples seen, warm-up, flat run, hold); last_raw, same,
    since: carried."""
    mains_sos, lf_sos, smooth_sos = filters
    mains_state, lf_state, smooth_state = states
    clip, flat_p, mains_r, motion_r, mains_floor, motion_floor = levels
    seen, warmup, flat_run, hold = counts
    rows, n = raw.shape
    has_mains = mains_sos.shape[0] > 0
    m0 = mains_sos[0] if has_mains else smooth_sos[0]
    m1 = mains_sos[1] if has_mains else smooth_sos[0]
    l0, l1, sm = lf_sos[0], lf_sos[1], smooth_sos[0]
    zero = np.zeros(2)
    for p in range(rows):
        prev = last_raw[p]
        run = same[p]
        s0, s1, s2, s3 = since[0, p], since[1, p], since[2, p], since[3, p]
        zm0 = mains_state[p, 0] if has_mains else zero
        zm1 = mains_state[p, 1] if has_mains else zero
        a0, a1, b0, b1 = zm0[0], zm0[1], zm1[0], zm1[1]
        c0, c1, d0, d1 = lf_state[p, 0, 0], lf_state[p, 0, 1], lf_state[p, 1, 0], lf_state[p, 1, 1]
        e0, e1 = smooth_state[p, 0, 0], smooth_state[p, 0, 1]
        f0, f1 = smooth_state[rows + p, 0, 0], smooth_state[rows + p, 0, 1]
        g0, g1 = smooth_state[2 * rows + p, 0, 0], smooth_state[2 * rows + p, 0, 1]
        for i in range(n):
            r = np.float64(raw[p, i])
            clipped = abs(r) >= clip
            m = 0.0
            if has_mains:
                m, a0, a1 = _biquad(m0, (a0, a1), r)
                m, b0, b1 = _biquad(m1, (b0, b1), m)
            lf, c0, c1 = _biquad(l0, (c0, c1), r)
            lf, d0, d1 = _biquad(l1, (d0, d1), lf)
            b = filtered[p, i]
            band_p, e0, e1 = _biquad(sm, (e0, e1), b * b)
            mains_p, f0, f1 = _biquad(sm, (f0, f1), m * m)
            lf_p, g0, g1 = _biquad(sm, (g0, g1), lf * lf)
            flat = band_p < flat_p
            mains = _over(mains_p, band_p, mains_r, mains_floor)
            motion = _over(lf_p, band_p, motion_r, motion_floor)
            if seen + i < warmup:
                flat = mains = motion = False
            run = run + 1 if r == prev else 0
            prev = r
            if run >= flat_run:
                flat = True
            s0 = 0 if flat else s0 + 1
            s1 = 0 if clipped else s1 + 1
            s2 = 0 if mains else s2 + 1
            s3 = 0 if motion else s3 + 1
            out[p, i] = _held_flags(s0, s1, s2, s3, hold)
        if has_mains:
            mains_state[p, 0, 0], mains_state[p, 0, 1] = a0, a1
            mains_state[p, 1, 0], mains_state[p, 1, 1] = b0, b1
        lf_state[p, 0, 0], lf_state[p, 0, 1], lf_state[p, 1, 0], lf_state[p, 1, 1] = c0, c1, d0, d1
        smooth_state[p, 0, 0], smooth_state[p, 0, 1] = e0, e1
        smooth_state[rows + p, 0, 0], smooth_state[rows + p, 0, 1] = f0, f1
        smooth_state[2 * rows + p, 0, 0], smooth_state[2 * rows + p, 0, 1] = g0, g1
        if n:
            last_raw[p] = prev
        same[p] = run
        since[0, p], since[1, p], since[2, p], since[3, p] = s0, s1, s2, s3


@_jit
def _switch_row(
    x: Any, p: int, levels: Any, reach: Any, state: Any, runs: Any, out: Any, above: Any
) -> None:
    """One row of feedback.processing.activation.debounce(x >= on, x < off, ...), sample by
    sample, levels = (on, off) and runs = (run_on, run_off) per row: the runs and `state`
    edited in place; the switch into out[p], x >= on into above[p]."""
    s = state[p]
    on, off = levels[0][p], levels[1][p]
    a, b = runs[0][p], runs[1][p]
    for i in range(x.shape[1]):
        v = x[p, i]
        up = v >= on
        a = a + 1 if up else 0
        b = b + 1 if v < off else 0
        if b == reach[1]:  # (an off event wins, as in the numpy path)
            s = False
        elif a == reach[0]:
            s = True
        out[p, i] = s
        above[p, i] = up
    state[p] = s
    runs[0][p], runs[1][p] = a, b


@_jit
def debounce(x: Any, levels: Any, reach: Any, state: Any, runs: Any, out: Any) -> Any:
    """The two-level switch with minimum times per row (levels = (on, off) arrays, reach =
    (n_on, n_off), each at least 1, runs = (run_on, run_off) int64 arrays, edited), into
    out = (switch, x >= on, new state), arrays the caller made (cheaper than arrays boxed on
    return). Returns (switched, moved): the state at the end differs from `state`, a sample
    differs from it (an edge in the block). `state` is not edited (callers compare with it)."""
    switch, above, new = out
    rows, n = x.shape
    for p in range(rows):
        new[p] = state[p]
        _switch_row(x, p, levels, reach, new, runs, switch, above)
    switched = False
    moved = False
    for p in range(rows):
        switched |= new[p] != state[p]
        for i in range(n):
            moved |= switch[p, i] != state[p]
    return switched, moved


@_jit
def activation_switch(
    x: Any, levels: Any, reach: Any, state: Any, runs: Any, scale: Any, sums: Any, out: Any
) -> Any:
    """`debounce` into out = (switch, level, new state), the level being max((x − rest) ·
    scale, 0) per row (scale = (rest, scale) per row), as ActivationDetector._segment
    computes it, and, when `sums` has a row each and x at most PAIRWISE_BLOCK columns, each
    row's sum (np.add.reduce) added to it. Returns (switched, moved, summed)."""
    switch, level, new = out
    rows, n = x.shape
    above = np.empty((rows, n), dtype=np.bool_)
    switched, moved = debounce(x, levels, reach, state, runs, (switch, above, new))
    rest = scale[0]
    factor = scale[1]
    summed = n <= PAIRWISE_BLOCK and sums.shape[0] == rows
    if summed:
        total = np.empty(1)
        for p in range(rows):
            _leaf_sums(x[p], 0, n, 1, total)
            sums[p] += total[0]
    for p in range(rows):
        for i in range(n):
            d = (x[p, i] - rest[p]) * factor[p]
            level[p, i] = 0.0 if d < 0.0 else d
    return switched, moved, summed


@_jit
def band_zone(pct: Any, levels: Any, reach: Any, state: Any, runs: Any, out: Any) -> Any:
    """BandDetector.process: the low edge (row 0) and the high edge (row 1) switched on the
    same % MVC, into out = (zone int8: 0 below, 1 in band, 2 above; new state). Returns
    whether the state changed."""
    zone, new = out
    n = pct.shape[0]
    x = np.empty((2, n))
    for i in range(n):
        x[0, i] = pct[i]
        x[1, i] = pct[i]
    over = np.empty((2, n), dtype=np.bool_)
    above = np.empty((2, n), dtype=np.bool_)
    switched, _ = debounce(x, levels, reach, state, runs, (over, above, new))
    for i in range(n):
        zone[i] = 2 if over[1, i] else (1 if over[0, i] else 0)
    return switched


@_jit
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


@_jit
def _after(a: float, b: float) -> bool:
    """a sorts after b (NaN after every number)."""
    if a != a:
        return b == b
    return a > b


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
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


@_jit
def _deviation(v: float, m: float, limit: float, keep_all: bool) -> float:
    """A point's term of the SD sum in `baseline_stats`: (v − m)² if kept, else 0.0."""
    d = v - m
    return d * d if keep_all or v <= limit else 0.0


@_jit
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


@_jit
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


@_jit
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


@_jit
def _slide(values: Any, n: int, gone: float, new: float) -> int:
    """activation._slide on one row of sorted `values` holding n means: `gone` out (the
    leftmost equal one), `new` in after the equal ones (bisect.insort); NaN: none. Returns
    the new count."""
    if gone == gone:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if values[mid] < gone:
                lo = mid + 1
            else:
                hi = mid
        for m in range(lo, n - 1):
            values[m] = values[m + 1]
        n -= 1
    if new == new:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if new < values[mid]:
                hi = mid
            else:
                lo = mid + 1
        for m in range(n, lo, -1):
            values[m] = values[m - 1]
        values[lo] = new
        n += 1
    return n


@_jit
def _newest_mean(ring: Any, p: int, filled: int, k_ref: int) -> float:
    """The mean of the valid ones among the newest min(k_ref, filled) frames of row p, summed
    newest first from 0.0 (activation._ordered_sum, 0.0 for a NaN frame); NaN if none."""
    width = ring.shape[1]
    total, valid = 0.0, 0
    for j in range(min(k_ref, filled)):
        v = ring[p, (filled - 1 - j) % width]
        if v == v:
            total += v
            valid += 1
        else:
            total += 0.0
    return total / valid if valid else np.nan


@_jit
def _larger(a: float, b: float) -> float:
    """activation._set_levels' inlined NaN max: NaN from `a`, else the larger, `a` on a tie."""
    return a if a >= b or a != a else b


@_jit
def _set_levels(rest_new: Any, calibrated: Any, mvc: Any, session: Any, floor: float,
                ratios: Any, out: Any) -> bool:  # fmt: skip
    """ActivationDetector._set_levels on arrays, into the rows 1..6 of `out` (rest now,
    reference now, on, off, rest column, scale column); returns whether every on level is
    finite."""
    on_ratio, on_frac, off_ratio, off_frac = ratios
    rows = rest_new.shape[0]
    rest_now, ref_now, on_level, off_level = out[1], out[2], out[3], out[4]
    rest_col, scale_col = out[5], out[6]
    ready = True
    for p in range(rows):
        rest = _larger(rest_new[p], floor)
        ref = _larger(mvc[p] if calibrated[p] else session[p], rest)
        span = ref - rest
        on = _larger(on_ratio * rest, rest + on_frac * span)
        off = _larger(off_ratio * rest, rest + off_frac * span)
        known = span > 0
        rest_col[p] = rest if known else 0.0
        scale_col[p] = 100.0 / span if known else 0.0
        rest_now[p] = rest
        ref_now[p] = rest + span
        on_level[p] = np.inf if on != on else on
        off_level[p] = np.inf if off != off else off
        ready &= on_level[p] != np.inf and on_level[p] != -np.inf
    return ready


@_jit
def frame_close(frame_state: Any, ring: Any, ordered: Any, levels: Any, refs: Any, out: Any) -> Any:
    """ActivationDetector._learn at a frame's close and the `_set_levels` after it, on the
    same float operations in the same order (to the bit):

    frame_state = (sums, counts, frame, filled): the frame means (NaN for a frame mostly
    unusable) go into column filled % width of `ring`; ordered = (values, lengths): each
    row's valid ring means kept sorted, the rest its `pct` percentile (lower rank);
    refs = (session reference per row, edited; k_ref; decay): the mean of the valid ones
    among the newest k_ref frames, decaying peak-hold;
    levels = (rest, calibrated, mvc, floor, pct, (on_ratio, on_fraction, off_ratio,
    off_fraction)).
    Writes the rows of `out` (7, rows), made by the caller: rest, rest now, reference now,
    on, off, rest column, scale column; returns whether every on level is finite. `sums` and
    `counts` are reset."""
    sums, counts, frame, filled = frame_state
    values, lengths = ordered
    old_rest, calibrated, mvc, floor, pct, ratios = levels
    session, k_ref, decay = refs
    rows, width = ring.shape
    col = filled % width
    rest_new = out[0]
    for p in range(rows):
        mean = sums[p] / counts[p] if 2 * counts[p] > frame else np.nan
        gone = ring[p, col] if filled >= width else np.nan
        ring[p, col] = mean
        sums[p] = 0.0
        counts[p] = 0
        n = lengths[p] = _slide(values[p], lengths[p], gone, mean)
        rest = values[p, math.floor(pct / 100.0 * (n - 1))] if n else np.nan
        rest_new[p] = old_rest[p] if rest != rest else rest
    filled += 1
    for p in range(rows):
        effort = _newest_mean(ring, p, filled, k_ref)
        held = session[p] * decay
        session[p] = effort if held != held or effort > held else held
    return _set_levels(rest_new, calibrated, mvc, session, floor, ratios, out)
