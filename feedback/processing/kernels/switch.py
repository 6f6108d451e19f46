"""The debounced two-level switches: the Hodges-Bui onset rule, the activation switch (with its
per-sample level and the frame sums) and the target band's two edges.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from feedback.processing.kernels.common import PAIRWISE_BLOCK, jit
from feedback.processing.kernels.sums import _leaf_sums


@jit
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


@jit
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


@jit
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


@jit
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
