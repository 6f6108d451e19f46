"""The chain's kernels: scipy's `_sosfilt` cascade (direct form II transposed, section after
section), the moving RMS or the low-passed rectified envelope, and % MVC, as the numpy path
computes them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from feedback.processing.kernels.common import jit
from feedback.processing.kernels.sums import windowed_sums


@jit
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


@jit
def _percent(envelope: Any, rest: Any, span: Any, pct: Any) -> None:
    """100 · max(envelope − rest, 0) / span, as the numpy path computes it (NaN kept)."""
    for p in range(envelope.shape[0]):
        for i in range(envelope.shape[1]):
            d = envelope[p, i] - rest[p]
            if d < 0.0:
                d = 0.0
            d *= 100.0
            pct[p, i] = d / span[p]


@jit
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


@jit
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
