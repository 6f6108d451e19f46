"""The usual block through every numeric step in one call: the chain, the signal quality, the
Hodges-Bui switch with its rest window, and the activation switch with its frame sums
(feedback.processing.block_step decides when a block is usual).

Calling numba costs about 0.1-0.4 µs per array argument (each is unboxed) besides the call:
the six calls a block made before, with some sixty arrays, cost more than their arithmetic.
Here the arrays that live as long as the steps (filter coefficients and states, the quality's
counters, the rest window's points, the switches' runs) are held in one `BlockState`, a numba
structref unboxed as one pointer, bound once (`bind_block`) to the very arrays the steps keep,
so the per-step path and this one carry the same state. The arrays a step replaces rather than
edits (levels, switch states) come with each call. Each step is the kernel its own path calls,
with the same arguments, in the pipeline's order, so the values are the same to the bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba.core import types as numba_types
from numba.experimental import structref as numba_structref

from feedback.processing.kernels.baseline import baseline_add_window
from feedback.processing.kernels.chain import chain_lowpass, chain_rms
from feedback.processing.kernels.common import FLAT, PAIRWISE_BLOCK, RELEARN_RATIO, jit
from feedback.processing.kernels.quality import quality_flags
from feedback.processing.kernels.sums import _leaf_sums
from feedback.processing.kernels.switch import activation_switch, band_zone, debounce

# numba's typing API is only partly annotated: used as Any here.
types: Any = numba_types
structref: Any = numba_structref


@structref.register
class BlockStateType(types.StructRef):  # type: ignore[misc]
    def preprocess_fields(self, fields: Any) -> Any:
        return tuple((name, types.unliteral(t)) for name, t in fields)


_F1, _F2, _F3 = types.float64[::1], types.float64[:, ::1], types.float64[:, :, ::1]
_I1, _I2 = types.int64[::1], types.int64[:, ::1]
BLOCK_STATE = BlockStateType(
    fields=(
        ("rms", types.boolean),
        ("band_sos", _F2),
        ("band_state", _F3),
        ("squares", _F2),
        ("leaves", _I2),
        ("ops", _I1),
        ("lp_sos", _F2),
        ("lp_state", _F3),
        ("rest", _F1),
        ("span", _F1),
        ("q_sos", types.UniTuple(_F2, 3)),
        ("q_state", types.UniTuple(_F3, 3)),
        ("q_levels", _F1),
        ("q_counts", _I1),
        ("q_last_raw", _F1),
        ("q_same", _I1),
        ("q_since", _I2),
        ("o_reach", types.UniTuple(types.int64, 2)),
        ("o_runs", types.UniTuple(_I1, 2)),
        ("o_points", _F2),
        ("o_ordered", _F2),
        ("o_last", _F1),
        ("o_run", _F3),
        ("o_plan", types.UniTuple(_I1, 2)),
        ("o_leaves", _I2),
        ("o_k", types.float64),
        ("a_reach", types.UniTuple(types.int64, 2)),
        ("a_runs", types.UniTuple(_I1, 2)),
        ("a_sums", _F1),
        ("a_counts", _I1),
        ("b_runs", types.UniTuple(_I1, 2)),
    )
)


class BlockState(structref.StructRefProxy):  # type: ignore[misc]
    """The steps' long-lived arrays, as one argument (see the module docstring)."""

    # Every BlockState has this one type: a class attribute, where numba's dispatcher looks
    # for it on each call (StructRefProxy's is a property, two Python calls a block).
    _numba_type_ = BLOCK_STATE


structref.define_boxing(BlockStateType, BlockState)


@jit
def bind_block(chain: Any, quality: Any, onset: Any, activation: Any, band: Any) -> Any:
    """A BlockState over the steps' arrays (not copies): chain = (rms, band sos, band state,
    squares, plan leaves, plan ops, low-pass sos, low-pass state, rest, span); quality =
    (3 sos, 3 states, 6 levels, (warm-up, flat run, hold), last raw, same, since); onset =
    (reach, runs, points, ordered, last, running sums, (ops, leaf_of), leaves, k_sd); activation =
    (reach, runs, sums, counts); band = the runs of the band's two edges. Runs: (run_on,
    run_off) of a switch, edited in place."""
    st = structref.new(BLOCK_STATE)
    st.rms, st.band_sos, st.band_state, st.squares, st.leaves, st.ops = chain[:6]
    st.lp_sos, st.lp_state, st.rest, st.span = chain[6:]
    st.q_sos, st.q_state, st.q_levels, st.q_counts = quality[:4]
    st.q_last_raw, st.q_same, st.q_since = quality[4:]
    st.o_reach, st.o_runs, st.o_points, st.o_ordered, st.o_last = onset[:5]
    st.o_run, st.o_plan, st.o_leaves, st.o_k = onset[5:]
    st.a_reach, st.a_runs, st.a_sums, st.a_counts = activation
    st.b_runs = band
    return st


@jit
def block_sos(st: Any) -> Any:
    """The band-pass coefficients the state holds (the same array as the chain's)."""
    return st.band_sos


@jit
def _usable(flags: Any) -> Any:
    """Where a quality flag is up, the samples FLAT leaves usable for learning the rest (an
    empty mask: every sample usable, no flag anywhere)."""
    rows, n = flags.shape
    flagged = False
    for p in range(rows):
        for i in range(n):
            flagged |= flags[p, i] != 0
    usable = np.empty((rows, n) if flagged else (0, 0), dtype=np.bool_)
    if flagged:
        for p in range(rows):
            for i in range(n):
                usable[p, i] = (flags[p, i] & FLAT) == 0
    return usable


@jit
def _any_set(mask: Any) -> bool:
    """Whether any sample of any row is set (the activation state: at rest, none is, and the
    pipeline then skips its own test of the target row)."""
    rows, n = mask.shape
    for p in range(rows):
        for i in range(n):
            if mask[p, i]:
                return True
    return False


@jit
def _quieter(mean: Any, sd: Any, on: Any, k: float) -> bool:
    """Whether a row of a rest window (mean, sd) would replace the baseline in force, whose
    on-levels are `on` (OnsetDetector._window_done's test, the same float64 operations):
    the window's end then needs no Python unless one does."""
    for p in range(mean.shape[0]):
        s = sd[p]
        if s > 0 and mean[p] + k * s < RELEARN_RATIO * on[p]:
            return True
    return False


@jit
def _frame_tail(envelope: Any, above: Any, first: int, moved: bool, summed: bool,
                out: Any) -> None:  # fmt: skip
    """After the activation switch: the frame counts (`summed`: the switch added the sums),
    the last quiet Hodges-Bui sample per row (not when the switch `moved`: see block_step),
    and each row's envelope sum when the block is at most PAIRWISE_BLOCK long; out =
    (counts, last quiet, sums), edited."""
    counts, quiet, sums = out
    rows, n = envelope.shape
    if summed:
        for p in range(rows):
            counts[p] += n
    if not moved:
        for p in range(rows):
            for i in range(n - 1, -1, -1):
                if not above[p, i]:
                    quiet[p] = first + i
                    break
    if n <= PAIRWISE_BLOCK:
        total = np.empty(1)
        for p in range(rows):
            _leaf_sums(envelope[p], 0, n, 1, total)
            sums[p] = total[0]


@jit
def block_step(raw: Any, st: Any, onset: Any, act: Any, band: Any, window: Any, outs: Any) -> int:
    """One block through the chain, the quality, the Hodges-Bui switch and rest window, and
    the activation switch: outs = (floats (4, rows, n): filtered, envelope, % MVC, activation
    level; flags uint8 (rows, n); switches bool (3, rows, n): Hodges-Bui state, above its
    on-level, activation state; sums (3, rows): the rest window's mean and SD when it ends
    here, and each row's envelope sum (np.add.reduce) when n ≤ PAIRWISE_BLOCK);
    onset = (on, off, state, has baseline); act = (on, off, rest, scale, state, last quiet
    Hodges-Bui sample); window = (first sample index, quality samples seen, learning, point
    index, skip, stride). The runs (in `st`), the frame sums and counts are edited, the states
    not (a switch's new state is its last sample), and the last quiet sample too unless the
    activation moved (its onsets need the one before the block: ActivationDetector._edges
    then moves it). band = (whether to, target row, on, off, state, reach, zone out int8 (n),
    new state out (2)): the target band's zone on that row's % MVC (BandDetector.process).

    Returns a bit set: 1 Hodges-Bui switched, 2 it moved within the block, 4 activation
    switched, 8 it moved, 16 the frame sums were added, 32 a quality flag is up, 64 the
    envelope sums were made, 128 the band's state changed, the rest window's code
    (baseline_add_window) << 8, and 1024 a row of the window that ended here is quieter than
    the baseline in force (`_quieter`: it replaces it), 2048 some row's activation state is
    on somewhere in the block (`_any_set`)."""
    floats, flags, switches, sums = outs
    filtered, envelope, pct, level = floats[0], floats[1], floats[2], floats[3]
    rows, n = raw.shape
    if st.rms:
        chain_rms(raw, st.band_sos, st.band_state, st.squares, (st.leaves, st.ops),
                  (st.rest, st.span), (filtered, envelope, pct))  # fmt: skip
    else:
        chain_lowpass(raw, st.band_sos, st.band_state, st.lp_sos, st.lp_state,
                      (st.rest, st.span), (filtered, envelope, pct))  # fmt: skip
    first, seen, learning, at, skip, stride = window
    lv, qc = st.q_levels, st.q_counts
    quality_flags(raw, filtered, st.q_sos, st.q_state,
                  (lv[0], lv[1], lv[2], lv[3], lv[4], lv[5]), (seen, qc[0], qc[1], qc[2]),
                  st.q_last_raw, st.q_same, st.q_since, flags)  # fmt: skip
    usable = _usable(flags)
    flagged = usable.shape[0] > 0
    code = 32 if flagged else 0
    on, off, o_state, has_baseline = onset
    hb, above = switches[0], switches[1]
    if has_baseline:
        new = np.empty(rows, dtype=np.bool_)
        switched, moved = debounce(envelope, (on, off), st.o_reach, o_state, st.o_runs,
                                   (hb, above, new))  # fmt: skip
        code |= (1 if switched else 0) | (2 if moved else 0)
    else:
        hb[:] = False
        above[:] = False
    if learning:
        done = baseline_add_window(envelope, usable, skip, stride, at,
                                   (st.o_points, st.o_ordered, st.o_last),
                                   (st.o_run, (st.o_leaves, st.o_plan[0], st.o_plan[1])),
                                   (sums[0], sums[1]))  # fmt: skip
        code |= done << 8
        if done == 1 and has_baseline and _quieter(sums[0], sums[1], on, st.o_k):
            code |= 1024
    a_on, a_off, rest, scale, a_state, quiet = act
    new_a = np.empty(rows, dtype=np.bool_)
    switched, moved, summed = activation_switch(
        envelope, (a_on, a_off), st.a_reach, a_state, st.a_runs, (rest, scale),
        st.a_sums[:0] if flagged else st.a_sums, (switches[2], level, new_a),
    )  # fmt: skip
    code |= (4 if switched else 0) | (8 if moved else 0) | (16 if summed else 0)
    if _any_set(switches[2]):
        code |= 2048
    _frame_tail(envelope, above, first, moved, summed, (st.a_counts, quiet, sums[2]))
    if n <= PAIRWISE_BLOCK:
        code |= 64
    zoned, row, b_on, b_off, b_state, b_reach, zone, b_new = band
    if zoned and band_zone(pct[row], (b_on, b_off), b_reach, b_state, st.b_runs,
                           (zone, b_new)):  # fmt: skip
        code |= 128
    return code
