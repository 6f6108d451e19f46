"""feedback.processing.quality.SignalQuality.process in one call per block: the mains, LF and
smoothing cascades sample by sample with their states in registers, the flags held.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from feedback.processing.kernels.common import CLIP, FLAT, MAINS, MOTION, jit


@jit
def _biquad(c: Any, z: Any, x: float) -> tuple[float, float, float]:
    """One sample through one section (coefficients c, state z = (z0, z1) as scalars, so that
    a row's states stay in registers); returns (y, z0, z1), the operations of `cascade`."""
    y = c[0] * x + z[0]
    return y, c[1] * x - c[4] * y + z[1], c[2] * x - c[5] * y


@jit
def _held_flags(s0: int, s1: int, s2: int, s3: int, hold: int) -> int:
    """FLAT | CLIP | MAINS | MOTION for the flags raised within `hold` samples."""
    f = 0
    if s0 <= hold:
        f |= FLAT
    if s1 <= hold:
        f |= CLIP
    if s2 <= hold:
        f |= MAINS
    if s3 <= hold:
        f |= MOTION
    return f


@jit
def _over(power: float, band_power: float, ratio: float, floor: float) -> bool:
    """power ≥ max(ratio · band power, floor), NaN failing (np.maximum keeps a NaN)."""
    limit = ratio * band_power
    if limit < floor:
        limit = floor
    return power >= limit


@jit
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
