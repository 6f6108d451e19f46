"""Where activation sits against the target band, with hysteresis, sample by sample."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Zone(enum.IntEnum):
    BELOW = 0
    IN_BAND = 1
    ABOVE = 2


def hysteresis(x: np.ndarray, on: float, off: float, state: bool) -> tuple[np.ndarray, bool]:
    """Schmitt trigger: true from x ≥ on until x < off. Vectorised, and exact across blocks.

    Each sample that crosses a threshold is an event; every sample takes the most recent event
    before it (forward fill), or the carried-in state when there is none yet.
    """
    events = np.zeros(x.shape[0], dtype=np.int8)
    events[x >= on] = 1
    events[x < off] = -1
    positions = np.where(events != 0, np.arange(x.shape[0]), -1)
    last = np.maximum.accumulate(positions) if x.shape[0] else positions
    out = np.where(last >= 0, events[np.maximum(last, 0)] > 0, state)
    return out, bool(out[-1]) if out.shape[0] else state


def run_starts(x: np.ndarray) -> list[int]:
    """Indices where a run of equal values begins in a 1-D array (none when it is empty)."""
    if not x.shape[0]:
        return []
    return [0, *(np.flatnonzero(x[1:] != x[:-1]) + 1).tolist()]


def run_lengths(mask: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each sample, along the last axis (0 where False);
    `carried` is the run length at the end of the previous block, one per row."""
    n = mask.shape[-1]
    idx = np.arange(n)
    # Shortcuts for the usual block, all one value (each gives what the general formula does).
    if n and mask.all():
        return np.asarray(idx + 1 + carried[..., None])
    if n and not mask.any():
        return np.zeros(mask.shape, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(mask, -1, idx), axis=-1) if n else mask
    return np.where(last_false >= 0, idx - last_false, idx + 1 + carried[..., None])


@dataclass(slots=True)
class DebounceState:
    state: np.ndarray  # bool per row
    run_on: np.ndarray  # int64 per row: current run of `on` samples
    run_off: np.ndarray

    @classmethod
    def zeros(cls, rows: int) -> DebounceState:
        z = np.zeros(rows, dtype=np.int64)
        return cls(np.zeros(rows, dtype=bool), z, z.copy())


def debounce(
    on: np.ndarray, off: np.ndarray, n_on: int, n_off: int, carry: DebounceState
) -> np.ndarray:
    """Two-threshold switch with minimum times: turns on once `on` has held for n_on samples,
    off once `off` has held for n_off samples; `on` and `off` must never both be true.

    Rows are independent channels, (rows, n). The switch points are the samples where a run
    reaches exactly its length; the state is the forward fill of those points (as in
    `hysteresis`), so the result does not depend on how the signal is split into blocks.
    """
    run_on = run_lengths(on, carry.run_on)
    run_off = run_lengths(off, carry.run_off)
    n = on.shape[-1]
    events = np.zeros(on.shape, dtype=np.int8)
    events[run_on == max(n_on, 1)] = 1
    events[run_off == max(n_off, 1)] = -1
    idx = np.arange(n)
    last = np.maximum.accumulate(np.where(events != 0, idx, -1), axis=-1) if n else events
    picked = np.take_along_axis(events, np.maximum(last, 0), axis=-1) > 0
    out = np.where(last >= 0, picked, carry.state[:, None])
    if n:
        carry.state = out[:, -1].copy()
        carry.run_on = run_on[:, -1].copy()
        carry.run_off = run_off[:, -1].copy()
    return out


# Up to this many rows the shortcut runs on plain Python numbers: cheaper than numpy calls on
# arrays of a few elements. Beyond it (many sessions as one array) numpy wins.
SMALL_ROWS = 8


def debounce_levels(
    x: np.ndarray,
    on_level: float | np.ndarray,
    off_level: float | np.ndarray,
    n_on: int,
    n_off: int,
    carry: DebounceState,
) -> np.ndarray:
    """`debounce(x >= on_level, x < off_level, ...)` for (rows, n) `x` and per-row (or scalar)
    levels, with a shortcut for the usual block, in which no row crosses either level.

    A row's minimum and maximum tell whether each level's test holds for all of its samples or
    for none; when that is so for every row, each row can switch at most once, at a sample known
    from the carried run lengths, and no per-sample work is needed. NaN fails both tests and
    takes the general path, as do mixed rows.
    """
    extremes = (x.min(axis=-1), x.max(axis=-1)) if x.shape[-1] else None
    return debounce_within(x, extremes, on_level, off_level, n_on, n_off, carry)


def debounce_within(
    x: np.ndarray,
    extremes: tuple[np.ndarray, np.ndarray] | None,
    on_level: float | np.ndarray,
    off_level: float | np.ndarray,
    n_on: int,
    n_off: int,
    carry: DebounceState,
) -> np.ndarray:
    """`debounce_levels` given each row's (minimum, maximum) (None for an empty block), for a
    caller that tests the same signal against several pairs of levels."""
    n = x.shape[-1]
    if extremes is not None:
        low, high = extremes
        rows = low.shape[0]
        if rows <= SMALL_ROWS:
            levels = (_per_row(on_level, rows), _per_row(off_level, rows))
            out = _uniform_small(low.tolist(), high.tolist(), levels, (n, n_on, n_off), carry)
        else:
            out = _uniform_many(low, high, on_level, off_level, (n, n_on, n_off), carry)
        if out is not None:
            return out
    on_col, off_col = np.asarray(on_level)[..., None], np.asarray(off_level)[..., None]
    return debounce(x >= on_col, x < off_col, n_on, n_off, carry)


def _per_row(level: float | np.ndarray, rows: int) -> list[float]:
    return level.tolist() if isinstance(level, np.ndarray) else [float(level)] * rows


def _uniform_small(
    lows: list[float],
    highs: list[float],
    levels: tuple[list[float], list[float]],
    lengths: tuple[int, int, int],
    carry: DebounceState,
) -> np.ndarray | None:
    """`debounce` for rows whose `on` and `off` tests are each constant over the block, or None
    when a row is mixed. `lengths` = (samples in the block, n_on, n_off)."""
    plan = []
    for low, high, on, off in zip(lows, highs, *levels, strict=True):
        on_all, on_none = low >= on, high < on
        off_all, off_none = high < off, low >= off
        if not ((on_all or on_none) and (off_all or off_none)) or (on_all and off_all):
            return None
        plan.append((on_all, off_all))
    n, n_on, n_off = lengths
    run_on, run_off, state = carry.run_on.tolist(), carry.run_off.tolist(), carry.state.tolist()
    out = np.repeat(carry.state[:, None], n, axis=1)
    for r, (on_all, off_all) in enumerate(plan):
        # A run reaches its length (the switch point) at this sample, if inside the block.
        if on_all:
            at = max(n_on, 1) - 1 - run_on[r]
        else:
            at = max(n_off, 1) - 1 - run_off[r] if off_all else n
        if 0 <= at < n:
            out[r, at:] = on_all
            state[r] = on_all
        run_on[r] = run_on[r] + n if on_all else 0
        run_off[r] = run_off[r] + n if off_all else 0
    carry.state = np.array(state, dtype=bool)
    carry.run_on = np.array(run_on, dtype=np.int64)
    carry.run_off = np.array(run_off, dtype=np.int64)
    return out


def _uniform_many(
    low: np.ndarray,
    high: np.ndarray,
    on_level: float | np.ndarray,
    off_level: float | np.ndarray,
    lengths: tuple[int, int, int],
    carry: DebounceState,
) -> np.ndarray | None:
    """`_uniform_small` vectorised over rows."""
    on_all, on_none = low >= on_level, high < on_level
    off_all, off_none = high < off_level, low >= off_level
    if not ((on_all | on_none) & (off_all | off_none) & ~(on_all & off_all)).all():
        return None
    n, n_on, n_off = lengths
    at = np.where(
        on_all,
        max(n_on, 1) - 1 - carry.run_on,
        np.where(off_all, max(n_off, 1) - 1 - carry.run_off, n),
    )
    switch = (at >= 0) & (at < n)
    carry.run_on = np.where(on_all, carry.run_on + n, 0)
    carry.run_off = np.where(off_all, carry.run_off + n, 0)
    before = carry.state[:, None]
    if not switch.any():
        return np.repeat(before, n, axis=1)
    out = np.where(np.arange(n) >= np.where(switch, at, n)[:, None], on_all[:, None], before)
    carry.state = out[:, -1].copy()
    return out


class BandDetector:
    """Classifies % MVC as below / in band / above a target band, with hysteresis at both edges
    and minimum times: a crossing must hold `min_on` samples (upward) or `min_off` samples
    (downward) before the zone changes, so a brief spike or dip does not flicker the cue."""

    def __init__(
        self,
        low_pct: float,
        high_pct: float,
        hysteresis_pct: float,
        min_on: int = 1,
        min_off: int = 1,
    ) -> None:
        self.set_band(low_pct, high_pct, hysteresis_pct)
        self.min_on, self.min_off = min_on, min_off
        self._low = DebounceState.zeros(1)
        self._high = DebounceState.zeros(1)

    def set_band(self, low_pct: float, high_pct: float, hysteresis_pct: float) -> None:
        self.low_pct = low_pct
        self.high_pct = high_pct
        self.hysteresis_pct = hysteresis_pct

    def process(self, pct: np.ndarray) -> np.ndarray:
        h = self.hysteresis_pct
        x = pct[None, :]
        lo, hi = self.low_pct, self.high_pct
        ext = (x.min(axis=-1), x.max(axis=-1)) if x.shape[-1] else None
        n_on, n_off = self.min_on, self.min_off
        over_low = debounce_within(x, ext, lo, lo - h, n_on, n_off, self._low)[0]
        over_high = debounce_within(x, ext, hi + h, hi, n_on, n_off, self._high)[0]
        zone: np.ndarray = over_low.astype(np.int8)  # BELOW = 0, IN_BAND = 1
        zone[over_high] = Zone.ABOVE
        return zone
