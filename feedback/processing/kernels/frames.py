"""The activation detector's frame close (ActivationDetector._learn and `_set_levels`): the
ring of frame means kept sorted for the rest percentile, the decaying session reference, the
levels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from feedback.processing.kernels.common import jit


@jit
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


@jit
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


@jit
def _larger(a: float, b: float) -> float:
    """activation._set_levels' inlined NaN max: NaN from `a`, else the larger, `a` on a tie."""
    return a if a >= b or a != a else b


@jit
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


@jit
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
