"""What counts as one contraction in an activation state: the one definition, shared by the
live session (free-form counting), the reports and the real-data validation.

A contraction is a run of activation of at least `min_on_s`, after merging runs separated by
dips shorter than `merge_gap_s` (a tremor or a brief relaxation within one effort is not two
contractions). Order matters and is fixed: dips are merged first, then short runs dropped, so a
0.3 s + 0.1 s dip + 0.3 s effort counts once. A run still open at the end of the array counts
(its end is the array's end).

Pure and over a whole array (no I/O, no state): a live counter that sees the activation block
by block must give the same spans once each has ended (a dip is known to be a gap only after
`merge_gap_s`, a run to be a contraction only after `min_on_s`).
"""

from __future__ import annotations

import numpy as np

MIN_ON_S = 0.5  # shorter activations are blips, not contractions (issue 10)
MERGE_GAP_S = 0.3  # dips shorter than this inside one effort are merged


def activation_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) sample spans of True in a 1-D bool array."""
    a = np.asarray(active, dtype=bool)
    if a.ndim != 1:
        raise ValueError(f"active must be 1-D, got shape {a.shape}")
    edges = np.flatnonzero(np.diff(np.r_[0, a.astype(np.int8), 0]))
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def contraction_spans(
    active: np.ndarray,
    rate_hz: float,
    min_on_s: float = MIN_ON_S,
    merge_gap_s: float = MERGE_GAP_S,
) -> list[tuple[int, int]]:
    """[start, end) spans of the contractions in `active` (1-D bool, one value per sample)."""
    if rate_hz <= 0 or min_on_s < 0 or merge_gap_s < 0:
        raise ValueError("rate_hz must be > 0, min_on_s and merge_gap_s ≥ 0")
    gap = round(merge_gap_s * rate_hz)
    merged: list[tuple[int, int]] = []
    for s, e in activation_runs(active):
        if merged and s - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    shortest = round(min_on_s * rate_hz)
    return [(s, e) for s, e in merged if e - s >= shortest]


def count_contractions(
    active: np.ndarray,
    rate_hz: float,
    min_on_s: float = MIN_ON_S,
    merge_gap_s: float = MERGE_GAP_S,
) -> int:
    """Number of contractions in `active` (see the module docstring for the rule)."""
    return len(contraction_spans(active, rate_hz, min_on_s, merge_gap_s))
