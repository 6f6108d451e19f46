"""Whether each muscle is active, and where activation sits against the target band.

Two detectors, both causal, sample by sample, and split-invariant (one N-sample block gives the
same answer as N one-sample blocks):

- `ActivationDetector`: is the muscle contracting? Referenced to amplitude, not to noise.
  Per channel it tracks the rest level (a running low percentile of the envelope, so a session
  that starts mid-contraction finds its rest as soon as the muscle relaxes) and a reference
  (the calibrated MVC; without a calibration a running session peak that decays slowly). The
  channel turns active once its envelope has stayed, for `min_on_ms`, above BOTH
  `on_rest_ratio` × rest AND rest + `on_fraction` × (reference − rest); it turns inactive once
  it has stayed below the lower `off_*` pair for `min_off_ms`. Its public output is the
  `ActivationBlock` (an `OnsetBlock`, so every consumer of onsets reads it unchanged):
    active        bool (channels, n): the activation state, per sample
    events        onset/offset at each switch of `active`; an onset's `at_index` is the
                  Hodges-Bui instant (feedback.processing.onset), its `detected_index` the
                  sample the switch happened (what a live cue can know)
    rest_mv, reference_mv, on_mv, off_mv   per channel at the block's last sample, mV
    calibrated    bool per channel: the reference is a calibrated MVC (False: the running
                  session reference, and %MVC figures should say "uncalibrated")
    level_pct     (channels, n): 100·(envelope − rest)/(reference − rest), ≥ 0, the effort
                  against the reference in force (= %MVC when calibrated)
- `BandDetector`: below / in / above the target band of %MVC, with hysteresis and minimum
  times.

The Hodges-Bui rule (rest mean + k·SD) stays what it is good at: the instant of onset, hence
the VM–VL onset difference. As an on/off switch it fails on real recordings: the SD of a
smoothed rest envelope is only 10–40 % of its mean, so mean + 3 SD is 1.3–4.5 × rest and
low-level activity between efforts reads as a contraction (docs/activation.md).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

import numpy as np

from config.settings import ActivationSettings, CalibrationSettings
from feedback.processing import fused
from feedback.processing.records import record


@dataclass(frozen=True, slots=True)
class OnsetEvent:
    channel: str
    kind: Literal["onset", "offset"]
    at_index: int
    detected_index: int


@record
class OnsetBlock:
    active: np.ndarray  # bool (n_channels, n)
    events: tuple[OnsetEvent, ...]
    baseline_ready: bool
    above: np.ndarray | None = None  # Hodges-Bui: detection signal ≥ its on-threshold, per sample


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


def any_true(a: np.ndarray) -> bool:
    """`a.any()` for the small arrays of one block: np.count_nonzero skips the ufunc reduction
    machinery (a third of the time on 80 values), same answer (NaN counts as true)."""
    return bool(np.count_nonzero(a))


def all_true(a: np.ndarray) -> bool:
    """`a.all()` for the small arrays of one block (see `any_true`)."""
    return bool(np.count_nonzero(a) == a.size)


def run_starts(x: np.ndarray) -> list[int]:
    """Indices where a run of equal values begins in a 1-D array (none when it is empty)."""
    n = x.shape[0]
    if not n:
        return []
    if x.dtype.itemsize == 1:  # bool or int8: one run when every byte is the first one
        raw = x.tobytes()
        if raw.count(raw[:1]) == n:
            return [0]
    return [0, *(np.flatnonzero(x[1:] != x[:-1]) + 1).tolist()]


def run_lengths(mask: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each sample, along the last axis (0 where False);
    `carried` is the run length at the end of the previous block, one per row."""
    n = mask.shape[-1]
    idx = np.arange(n)
    # Shortcuts for the usual block, all one value (each gives what the general formula does).
    if n and all_true(mask):
        return np.asarray(idx + 1 + carried[..., None])
    if n and not any_true(mask):
        return np.zeros(mask.shape, dtype=np.int64)
    last_false = np.maximum.accumulate(np.where(mask, -1, idx), axis=-1) if n else mask
    return np.where(last_false >= 0, idx - last_false, idx + 1 + carried[..., None])


class DebounceState:
    """The switch carried from one block to the next, per row: `state` (bool), and the runs
    of `on` and `off` samples ending at the last sample (`run_on`, `run_off`, int64).

    `state` is always an array, replaced (never edited) when it changes; its list is cached
    against that array. The two run arrays are the same for the object's life (the setters
    and `reset` write into them), so the fused block (feedback.processing.block_step) binds
    them once and edits them every block. The shortcut for a few rows (`_uniform_small`, the
    numpy path only: the compiled path never reads the lists, which the kernels' edits would
    leave behind) works on plain lists: it keeps the runs as lists, written into the arrays
    only when something reads them (the general path), so the usual block converts nothing."""

    __slots__ = ("_listed", "_run_lists", "_runs", "_stale", "_state_list", "state")

    def __init__(self, state: np.ndarray, run_on: np.ndarray, run_off: np.ndarray) -> None:
        self.state = state
        self._runs = (run_on, run_off)
        self._run_lists: tuple[list[int], list[int]] | None = None
        self._stale = False  # the lists are newer than the arrays
        self._state_list: list[bool] = []
        self._listed: np.ndarray | None = None  # the state array `_state_list` was made from

    @classmethod
    def zeros(cls, rows: int) -> DebounceState:
        z = np.zeros(rows, dtype=np.int64)
        return cls(np.zeros(rows, dtype=bool), z, z.copy())

    def reset(self) -> None:
        """Inactive, no runs (a gap): `zeros`, in the same run arrays."""
        self.state = np.zeros(self.state.shape, dtype=bool)
        self._runs[0].fill(0)
        self._runs[1].fill(0)
        self._run_lists, self._stale = None, False

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._stale:
            assert self._run_lists is not None
            self._runs[0][:], self._runs[1][:] = self._run_lists
            self._stale = False
        return self._runs

    @property
    def run_on(self) -> np.ndarray:
        return self._arrays()[0]

    @run_on.setter
    def run_on(self, value: np.ndarray) -> None:
        self._arrays()[0][:] = value
        self._run_lists = None

    @property
    def run_off(self) -> np.ndarray:
        return self._arrays()[1]

    @run_off.setter
    def run_off(self, value: np.ndarray) -> None:
        self._arrays()[1][:] = value
        self._run_lists = None

    def lists(self) -> tuple[list[bool], list[int], list[int]]:
        """State, run_on and run_off as new lists (the caller may change them)."""
        if self._listed is not self.state:
            self._state_list, self._listed = self.state.tolist(), self.state
        if self._run_lists is None:
            on, off = self._runs
            self._run_lists = (on.tolist(), off.tolist())
        on_list, off_list = self._run_lists
        return list(self._state_list), list(on_list), list(off_list)

    def run_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """run_on and run_off as the arrays kept, for a caller that edits them in place (the
        compiled switch, feedback.processing.kernels): the lists are dropped."""
        runs = self._arrays()
        self._run_lists = None
        return runs

    def set_runs(self, run_on: list[int], run_off: list[int]) -> None:
        """New runs as lists (kept; written into the arrays if these are read)."""
        self._run_lists, self._stale = (run_on, run_off), True


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
        carry.run_on = run_on[:, -1]  # (copied into the carried arrays)
        carry.run_off = run_off[:, -1]
    return out


# Up to this many rows the shortcut runs on plain Python numbers: cheaper than numpy calls on
# arrays of a few elements. Beyond it (a high-density electrode array) numpy wins.
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
    on_level: float | np.ndarray | list[float],
    off_level: float | np.ndarray | list[float],
    n_on: int,
    n_off: int,
    carry: DebounceState,
) -> np.ndarray:
    """`debounce_levels` given each row's (minimum, maximum) (None for an empty block), for a
    caller that tests the same signal against several pairs of levels. The levels may be
    lists too (a caller that keeps them so spares the conversion per block)."""
    n = x.shape[-1]
    if extremes is not None:
        low, high = extremes
        rows = low.shape[0]
        if rows <= SMALL_ROWS:
            levels = (_per_row(on_level, rows), _per_row(off_level, rows))
            out = _uniform_small(low.tolist(), high.tolist(), levels, (n, n_on, n_off), carry)
        else:
            on_a, off_a = np.asarray(on_level), np.asarray(off_level)
            out = _uniform_many(low, high, on_a, off_a, (n, n_on, n_off), carry)
        if out is not None:
            return out
    on_col, off_col = np.asarray(on_level)[..., None], np.asarray(off_level)[..., None]
    return debounce(x >= on_col, x < off_col, n_on, n_off, carry)


def _per_row(level: float | np.ndarray | list[float], rows: int) -> list[float]:
    if isinstance(level, list):
        return level
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
    state, run_on, run_off = carry.lists()
    # Each row starts as its carried state (np.repeat's result, made cheaper when uniform).
    if not any(state):
        out = np.zeros((len(state), n), dtype=bool)
    elif all(state):
        out = np.ones((len(state), n), dtype=bool)
    else:
        out = np.repeat(carry.state[:, None], n, axis=1)
    switched = False
    for r, (on_all, off_all) in enumerate(plan):
        # A run reaches its length (the switch point) at this sample, if inside the block.
        if on_all:
            at = max(n_on, 1) - 1 - run_on[r]
        else:
            at = max(n_off, 1) - 1 - run_off[r] if off_all else n
        if 0 <= at < n:
            out[r, at:] = on_all
            state[r] = on_all
            switched = True
        run_on[r] = run_on[r] + n if on_all else 0
        run_off[r] = run_off[r] + n if off_all else 0
    if switched:
        carry.state = np.array(state, dtype=bool)
    carry.set_runs(run_on, run_off)
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
        self._kernels = fused.kernels()
        self.set_band(low_pct, high_pct, hysteresis_pct)
        self.min_on, self.min_off = min_on, min_off
        self._reach = (max(min_on, 1), max(min_off, 1))
        # Row 0 the low edge, row 1 the high edge: one debounce call for both.
        self._edges = DebounceState.zeros(2)
        # The compiled zone's new edge states land here: a scratch, copied only when an
        # edge switched (rarely), since the state array is replaced, never edited.
        self._new_state = np.empty(2, dtype=bool)

    def set_band(self, low_pct: float, high_pct: float, hysteresis_pct: float) -> None:
        self.low_pct = low_pct
        self.high_pct = high_pct
        self.hysteresis_pct = hysteresis_pct
        lo, hi, h = low_pct, high_pct, hysteresis_pct
        self._levels = ([lo, hi + h], [lo - h, hi])  # (on, off) of each edge
        self._level_arrays = (np.array(self._levels[0]), np.array(self._levels[1]))

    def fused_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The two edges' runs, for the fused block (kernels.bind_block)."""
        return self._edges.run_arrays()

    def compiled_args(self, n: int, row: int) -> tuple[Any, ...]:
        """kernels.block_step's `band`, to find the zone of n samples of `row` in the same
        call: (True, row, levels, state, reach, the zone it writes (at [6], handed out with
        the Tick: new each block), the new state it writes); `compiled_done` must follow
        when the state changed."""
        on, off = self._level_arrays
        zone = np.empty(n, dtype=np.int8)
        return (True, row, on, off, self._edges.state, self._reach, zone, self._new_state)

    def compiled_done(self) -> None:
        """The block's edges switched: the new state, out of the scratch the next block
        writes into."""
        self._edges.state = self._new_state.copy()

    def process(self, pct: np.ndarray) -> np.ndarray:
        if self._kernels is not None:
            edges = self._edges
            zones, state = np.empty(pct.shape[0], dtype=np.int8), np.empty(2, dtype=bool)
            out = (zones, state)
            if self._kernels.band_zone(
                pct, self._level_arrays, self._reach, edges.state, edges.run_arrays(), out
            ):
                edges.state = state
            return zones
        n = pct.shape[0]
        over = None
        if n:  # the shortcut of debounce_within, on plain numbers: one signal, two edges
            # pct.min() and pct.max(), without their Python wrappers
            low, high = float(np.minimum.reduce(pct)), float(np.maximum.reduce(pct))
            lengths = (n, self.min_on, self.min_off)
            before = self._edges.state
            over = _uniform_small([low, low], [high, high], self._levels, lengths, self._edges)
            if over is not None and self._edges.state is before:
                # No edge switched (a switch replaces the state array): one zone throughout,
                # the value the general lines below give.
                lower, upper = before.tolist()
                return np.full(n, ABOVE if upper else int(lower), dtype=np.int8)
        if over is None:
            x = np.stack([pct, pct])
            on, off = np.array(self._levels[0])[:, None], np.array(self._levels[1])[:, None]
            over = debounce(x >= on, x < off, self.min_on, self.min_off, self._edges)
        zone: np.ndarray = over[0].astype(np.int8)  # BELOW = 0, IN_BAND = 1
        zone[over[1]] = ABOVE
        return zone


ABOVE = int(Zone.ABOVE)  # (an IntEnum member looked up once, not per block)
_NO_SUMS = np.zeros(0)  # (the compiled switch sums only when every sample is usable)
HISTORY_KEPT = 256  # frames of on levels kept for `on_level_at` (12.8 s of 50 ms frames)


def _empty() -> np.ndarray:
    return np.zeros(0)


@record
class ActivationBlock(OnsetBlock):
    """The activation state of one block (see the module docstring for each field)."""

    rest_mv: np.ndarray = dataclass_field(default_factory=_empty)
    reference_mv: np.ndarray = dataclass_field(default_factory=_empty)
    on_mv: np.ndarray = dataclass_field(default_factory=_empty)
    off_mv: np.ndarray = dataclass_field(default_factory=_empty)
    calibrated: np.ndarray = dataclass_field(default_factory=_empty)
    level_pct: np.ndarray = dataclass_field(default_factory=_empty)


def select(x: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Per row of `x`, the value of rank `rank[row]` in ascending order (NaN ranked last), as
    `np.sort(x)[row, rank[row]]` gives it, by selection: one `np.partition` when every row asks
    for the same rank (the usual case), one per row otherwise."""
    if x.shape[1] == 0:
        return np.full(x.shape[0], np.nan)
    ranks = rank.tolist()
    if len(set(ranks)) == 1:
        return np.asarray(np.partition(x, ranks[0], axis=1)[:, ranks[0]])
    return np.array([np.partition(row, k)[k] for row, k in zip(x, ranks, strict=True)])


def _low_percentile(frames: np.ndarray, pct: float) -> np.ndarray:
    """The `pct` percentile (lower rank, no interpolation) of each row, NaN left out; NaN for a
    row with no value. NaN ranked as +inf and the rank found by selection, not a sort (several
    times faster than np.nanpercentile): this runs once a frame inside one block's time."""
    valid = ~np.isnan(frames)
    n = valid.sum(axis=1)
    rank = np.floor(pct / 100.0 * (np.maximum(n, 1) - 1)).astype(np.int64)
    value = select(np.where(valid, frames, np.inf), rank)
    return np.where(n > 0, value, np.nan)


def _slide(frames: list[float], old: float, new: float, pct: float) -> float:
    """One channel's ring moved by a frame (`old` out, `new` in; NaN: none), in the sorted
    list of its valid means; returns the `pct` percentile as `_low_percentile` finds it (the
    lower rank among the valid values, NaN when there is none), to the bit: the same values,
    the same rank, found by lookup instead of selection."""
    if not math.isnan(old):
        del frames[bisect.bisect_left(frames, old)]
    if not math.isnan(new):
        bisect.insort(frames, new)
    if not frames:
        return math.nan
    return frames[math.floor(pct / 100.0 * (len(frames) - 1))]


def _ordered_sum(values: Iterable[float]) -> float:
    """Left to right from 0, as numpy sums along an axis that is not the contiguous one (the
    ring's columns picked by index come out column-major). Not `sum()`, which compensates
    from Python 3.12 on."""
    total = 0.0
    for v in values:
        total += v
    return total


def _nan_max(a: float, b: float) -> float:
    """np.maximum for two floats: NaN when either is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a >= b else b


def _last_true(mask: np.ndarray, first: int, carried: np.ndarray) -> np.ndarray:
    """Per row: the absolute index of the last True in `mask` (rows, n), else `carried`."""
    n = mask.shape[1]
    if not n or not any_true(mask):
        return carried
    if all_true(mask[:, -1]):  # the usual block, all quiet: its last sample
        last_quiet = np.empty(carried.shape, dtype=carried.dtype)
        last_quiet.fill(first + n - 1)
        return last_quiet
    has = mask.any(axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return np.where(has, first + last, carried)


class ActivationDetector:
    """Amplitude-referenced activation of each channel (see the module docstring).

    Rest and reference change only at frame boundaries (every `frame_ms` of samples seen), from
    statistics of whole frames; the switch compares each sample with the levels in force. The
    frame grid counts samples, so where a block ends changes nothing.
    """

    def __init__(
        self,
        settings: ActivationSettings,
        rate_hz: float,
        channels: tuple[str, ...],
        calibration: CalibrationSettings | None = None,
    ) -> None:
        s = settings
        c = len(channels)
        self.settings = settings
        self.channels = channels
        self.rate_hz = rate_hz
        per_ms = rate_hz / 1000.0
        self.n_on = max(1, round(s.min_on_ms * per_ms))
        self.n_off = max(1, round(s.min_off_ms * per_ms))
        self._frame = max(1, round(s.frame_ms * per_ms))
        frame_s = self._frame / rate_hz
        self._ring = np.full((c, max(1, round(s.rest_window_s / frame_s))), np.nan)
        self._k_ref = max(1, round(s.reference_window_ms / 1000.0 / frame_s))
        self._decay = 0.5 ** (frame_s / s.reference_half_life_s)
        self._lookback = round(s.onset_lookback_ms * per_ms)
        self._floor = s.rest_floor_uv / 1000.0
        self._filled = 0
        # The ring's frame means per channel, NaN left out, kept sorted as frames come and go:
        # the rest percentile is then one lookup per frame, not a selection over the ring.
        self._sorted: list[list[float]] = [[] for _ in channels]
        self._in_frame = 0
        self._sum = np.zeros(c)
        self._count = np.zeros(c, dtype=np.int64)
        # The newest `_k_ref` frame means per channel, newest first (NaN: no usable mean), and
        # the session reference, as plain floats: a frame close is a handful of numbers per
        # channel, cheaper in Python than in numpy calls (see `_learn`).
        # (A reference window longer than the ring reads the ring's frames over again, as the
        # ring itself would: `_recent_values`.)
        keep = min(self._k_ref, self._ring.shape[1])
        self._recent: list[deque[float]] = [deque(maxlen=keep) for _ in channels]
        self._recent_nan = [0] * c  # NaN frames among them (usually none: no masking then)
        self._session_ref: list[float] | np.ndarray = [0.0] * c
        self._kernels = fused.kernels()
        if self._kernels is not None:
            # The compiled frame close (kernels.frame_close) keeps the same figures in arrays:
            # each row's valid ring means sorted (and how many), the session reference.
            width = self._ring.shape[1]
            self._ordered = (np.empty((c, width)), np.zeros(c, dtype=np.int64))
            self._session_ref = np.zeros(c)
        self.rest = np.full(c, np.nan)
        self.calibrated = np.zeros(c, dtype=bool)
        self.mvc = np.full(c, np.nan)
        self.on_level = np.full(c, np.inf)
        self.off_level = np.full(c, np.inf)
        self._carry = DebounceState.zeros(c)
        self._reach = (self.n_on, self.n_off)
        self._quiet_hb = np.full(c, -1, dtype=np.int64)  # last sample below Hodges-Bui's level
        self._settle = 0
        self._restart = False
        self._set_levels()
        # (first sample, on levels) from each frame close on, for `on_level_at`: the newest
        # HISTORY_KEPT at most, so a block longer than that many frames may outrun it.
        self._history: list[tuple[int, np.ndarray]] = [(0, self.on_level)]
        if calibration is not None:
            self.use_calibration(calibration)

    def use_calibration(self, calibration: CalibrationSettings) -> None:
        """The reference becomes the calibrated MVC of each channel that has one (from the next
        sample); a calibrated rest seeds the rest level until the signal has given its own."""
        mode = self.settings.reference
        # New arrays, not edits in place: each block hands these out without copying them.
        self.calibrated, self.mvc, self.rest = (
            self.calibrated.copy(),
            self.mvc.copy(),
            self.rest.copy(),
        )
        for i, ch in enumerate(self.channels):
            has_mvc = ch in calibration.mvc_mv
            measured = ch in calibration.rest_sd_mv  # every calibration measures the rest
            ok = has_mvc and (mode == "mvc" or (mode == "auto" and measured))
            self.calibrated[i] = ok
            self.mvc[i] = calibration.mvc_mv[ch] if ok else np.nan
            if ok and np.isnan(self.rest[i]) and ch in calibration.rest_mv:
                self.rest[i] = calibration.rest_mv[ch]
        self._set_levels()

    def on_level_at(self, index: int) -> np.ndarray | None:
        """The on levels (mV, per channel) that judged sample `index`, among the samples seen;
        None when it is older than the history kept. Whatever the block sizes, the same value
        (the levels change at frame closes, on the sample grid)."""
        starts = [at for at, _ in self._history]
        k = bisect.bisect_right(starts, index) - 1
        if k < 0 or (k == 0 and len(self._history) >= HISTORY_KEPT):
            return None
        return self._history[k][1]

    def _frame_closed(self, next_index: int) -> None:
        """A frame closed: its levels judge the samples from `next_index` on."""
        self._history.append((next_index, self.on_level))
        if len(self._history) > 2 * HISTORY_KEPT:
            del self._history[:HISTORY_KEPT]

    @property
    def reference(self) -> np.ndarray:
        """The reference in force per channel, mV (never below the rest level)."""
        rest = np.maximum(self.rest, self._floor)
        session = np.array(self._session_ref)
        ref: np.ndarray = np.maximum(np.where(self.calibrated, self.mvc, session), rest)
        return ref

    def _set_levels(self) -> None:
        """The levels in force from the next sample, per channel. A handful of channels: plain
        floats (each numpy call on 4 numbers costs more than the arithmetic), with numpy's
        NaN rule for the maxima (`_nan_max`), so the values are np.maximum's to the bit."""
        s, floor = self.settings, self._floor
        on_ratio, on_frac = s.on_rest_ratio, s.on_fraction
        off_ratio, off_frac = s.off_rest_ratio, s.off_fraction
        rows = zip(
            self.rest.tolist(),
            self.calibrated.tolist(),
            self.mvc.tolist(),
            self._session_ref,
            strict=True,
        )
        rest_now, ref_now, on_lv, off_lv, rest_col, scale_col = [], [], [], [], [], []
        # `a if a >= b or a != a else b` is `_nan_max(a, b)` inlined (this runs at every frame
        # close): NaN from either side, else the larger, `a` on a tie.
        for raw_rest, calibrated, mvc, session_ref in rows:
            rest = raw_rest if raw_rest >= floor or raw_rest != raw_rest else floor
            ref = mvc if calibrated else session_ref
            ref = ref if ref >= rest or ref != ref else rest
            span = ref - rest  # reference − rest
            a, b = on_ratio * rest, rest + on_frac * span
            on = a if a >= b or a != a else b
            a, b = off_ratio * rest, rest + off_frac * span
            off = a if a >= b or a != a else b
            # Kept for the per-sample level: (envelope − rest) · scale, 0 where nothing is known.
            known = span > 0
            rest_col.append(rest if known else 0.0)
            scale_col.append(100.0 / span if known else 0.0)
            rest_now.append(rest)
            ref_now.append(rest + span)
            # No rest known yet (NaN): nothing can be judged, the channel stays inactive.
            on_lv.append(math.inf if math.isnan(on) else on)
            off_lv.append(math.inf if math.isnan(off) else off)
        self._scales = (np.array(rest_col), np.array(scale_col))
        self._rest_col, self._scale_col = self._scales[0][:, None], self._scales[1][:, None]
        self._rest_now, self._reference_now = np.array(rest_now), np.array(ref_now)
        self.on_level, self.off_level = np.array(on_lv), np.array(off_lv)
        self._level_arrays = (self.on_level, self.off_level)
        self._levels = (on_lv, off_lv)  # the same, as lists for the per-block switch
        self._ready = all(math.isfinite(v) for v in on_lv)

    def fused_state(self) -> tuple[Any, ...]:
        """(reach, the switch's runs, frame sums, frame counts) for the fused block
        (kernels.bind_block)."""
        return self._reach, self._carry.run_arrays(), self._sum, self._count

    def fused_args(self, n: int) -> tuple[Any, ...] | None:
        """For a usual block of n samples (inside one frame, no settling): the switch's (on,
        off, rest, scale, state, last quiet Hodges-Bui sample); None for another."""
        if self._settle or self._restart or n > self._frame - self._in_frame:
            return None
        levels = (*self._level_arrays, *self._scales)
        return (*levels, self._carry.state, self._quiet_hb)

    def fused_done(
        self,
        first: int,
        code: int,
        block: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        usable: np.ndarray | None,
    ) -> ActivationBlock:
        """`process`'s end after the fused block: block = (envelope, above Hodges-Bui, active,
        level) it made, `code` its kernels.block_step code (the switch's state, edges, frame
        sums), `usable` as for `process` (only read when the frame sums were not added)."""
        envelope, above, active, level = block
        n = envelope.shape[1]
        before = self._carry.state
        if code & 4:
            self._carry.state = active[:, n - 1].copy()
        found: list[OnsetEvent] = []
        if code & 8:  # (else the kernel moved the last quiet sample)
            found = self._edges(first, envelope, above, before, active)
        if code & 16:  # (the kernel added the sums and counts)
            self._in_frame += n
            if self._in_frame >= self._frame:
                self._close_compiled()
        else:
            self._learn(envelope, usable)
        if not self._in_frame:  # (a frame closed: tested here, a call a block saved)
            self._frame_closed(first + n)
        return self._result(active, found, above, level)

    def gap(self, settle: int) -> None:
        """The next samples do not follow the last ones: the switch restarts inactive and the
        first `settle` samples (the envelope refilling) are neither judged nor learnt from.
        Rest and reference are kept: the muscle and the electrodes are the same."""
        self._carry.reset()
        self._settle = settle
        self._restart = True
        self._in_frame, self._sum[:], self._count[:] = 0, 0.0, 0

    def process(
        self,
        first_index: int,
        envelope: np.ndarray,
        hodges_bui: OnsetBlock | None = None,
        usable: np.ndarray | None = None,
        extremes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> ActivationBlock:
        """`envelope` (channels, n) mV; `hodges_bui` the onset detector's block for the same
        samples (its `above` gives the onset instants; None, or no Hodges-Bui baseline yet: the
        instant is where the run above the on level began); `usable` (bool, like envelope;
        None: all) marks the samples the rest and reference may learn from (a flat line is no
        rest); `extremes` each row's (minimum, maximum) of the envelope, when the caller has
        them (see OnsetDetector.process)."""
        c, n = envelope.shape
        events: list[OnsetEvent] = []
        above = None if hodges_bui is None else hodges_bui.above
        pos = min(n, self._settle)
        self._settle -= pos
        if self._restart and pos < n:
            self._quiet_hb = np.full(c, first_index + pos - 1, dtype=np.int64)
            self._restart = False
        if pos == 0 and n and n <= self._frame - self._in_frame:
            # The usual block: inside one frame, so the levels hold for all of it.
            active, level = self._segment(first_index, envelope, above, usable, events, extremes)
        elif pos == 0 and n:
            active, level = self._frames(first_index, envelope, above, usable, events)
        else:
            active = np.zeros((c, n), dtype=bool)
            level = np.zeros((c, n))
            while pos < n:
                end = min(n, pos + self._frame - self._in_frame)
                hb = None if above is None else above[:, pos:end]
                ok = None if usable is None else usable[:, pos:end]
                seg = envelope[:, pos:end]
                state, lvl = self._segment(first_index + pos, seg, hb, ok, events)
                active[:, pos:end], level[:, pos:end] = state, lvl
                pos = end
        return self._result(active, events, above, level)

    def _result(
        self,
        active: np.ndarray,
        events: list[OnsetEvent],
        above: np.ndarray | None,
        level: np.ndarray,
    ) -> ActivationBlock:
        # The level arrays are replaced, never edited, when they change: no copies needed.
        # (Positional: the fields in their order, rest_mv … level_pct; keywords cost ~1 us.)
        return ActivationBlock(
            active,
            tuple(events),
            self._ready,
            above,
            self._rest_now,
            self._reference_now,
            self.on_level,
            self.off_level,
            self.calibrated,
            level,
        )

    def _segment(
        self,
        first: int,
        seg: np.ndarray,
        hb: np.ndarray | None,
        usable: np.ndarray | None,
        events: list[OnsetEvent],
        extremes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples within one frame (levels fixed): the switch, the level, the edges, then
        learning from them (which may close the frame and move the levels)."""
        before = self._carry.state
        moved, summed = True, False
        if self._kernels is not None:
            carry = self._carry
            state, level = np.empty(seg.shape, dtype=bool), np.empty(seg.shape)
            new = np.empty(before.shape, dtype=bool)
            switched, moved, summed = self._kernels.activation_switch(
                np.ascontiguousarray(seg),  # (one compiled layout: a slice is copied)
                self._level_arrays,
                self._reach,
                before,
                carry.run_arrays(),
                self._scales,
                self._sum if usable is None else _NO_SUMS,
                (state, level, new),
            )
            if switched:
                carry.state = new
        else:
            if extremes is None:
                extremes = (seg.min(axis=-1), seg.max(axis=-1)) if seg.shape[-1] else None
            on, off = self._levels
            state = debounce_within(seg, extremes, on, off, self.n_on, self.n_off, self._carry)
            level = seg - self._rest_col
            level *= self._scale_col
            np.maximum(level, 0.0, out=level)
        events += self._edges(first, seg, hb, before, state, moved)
        self._learn(seg, usable, summed)
        if not self._in_frame:
            self._frame_closed(first + seg.shape[1])
        return state, level

    def _frames(
        self,
        first: int,
        env: np.ndarray,
        hb: np.ndarray | None,
        usable: np.ndarray | None,
        events: list[OnsetEvent],
    ) -> tuple[np.ndarray, np.ndarray]:
        """A block across frame boundaries (a replay's long blocks): `_segment` per frame, with
        the per-sample work done once for the block. Learning reads the envelope only, never
        the switch, so each frame's levels are known before any switching; the switch then
        runs once over the block with each sample's levels (`debounce` does not depend on how
        the samples are split), and the same arithmetic per sample gives the same values."""
        lengths: list[int] = []
        on, off, rest, scale = [], [], [], []
        pos, n = 0, env.shape[1]
        while pos < n:
            end = min(n, pos + self._frame - self._in_frame)
            lengths.append(end - pos)
            # The levels are replaced, never edited, when a frame closes: references suffice.
            on.append(self.on_level[:, None])
            off.append(self.off_level[:, None])
            rest.append(self._rest_col)
            scale.append(self._scale_col)
            self._learn(env[:, pos:end], None if usable is None else usable[:, pos:end])
            if not self._in_frame:
                self._frame_closed(first + end)
            pos = end
        reps = np.array(lengths)
        on_x = np.repeat(np.concatenate(on, axis=1), reps, axis=1)
        off_x = np.repeat(np.concatenate(off, axis=1), reps, axis=1)
        before = self._carry.state
        state = debounce(env >= on_x, env < off_x, self.n_on, self.n_off, self._carry)
        level = env - np.repeat(np.concatenate(rest, axis=1), reps, axis=1)
        level *= np.repeat(np.concatenate(scale, axis=1), reps, axis=1)
        np.maximum(level, 0.0, out=level)
        events += self._edges(first, env, hb, before, state)
        return state, level

    def _edges(
        self,
        first: int,
        seg: np.ndarray,
        hb: np.ndarray | None,
        before: np.ndarray,
        state: np.ndarray,
        moved: bool = True,
    ) -> list[OnsetEvent]:
        """The onset and offset events of the block (`moved` False: the switch stayed where it
        was, known without looking), after moving the last quiet Hodges-Bui sample."""
        # `_last_true` returns the carried array or a new one, never edits it: no copy needed.
        quiet_hb = self._quiet_hb
        if hb is not None and hb.shape[1]:
            if not any_true(hb):  # the usual block: quiet throughout, its last sample
                # (np.empty and fill: np.full's Python wrapper costs a microsecond a block)
                self._quiet_hb = np.empty(quiet_hb.shape, np.int64)
                self._quiet_hb.fill(first + hb.shape[1] - 1)
            else:
                self._quiet_hb = _last_true(~hb, first, quiet_hb)
        if not moved or not state.shape[1] or not any_true(state != before[:, None]):
            return []  # the usual block: no channel switched
        prev = np.concatenate([before[:, None], state[:, :-1]], axis=1)
        rows, cols = np.nonzero(state != prev)
        events = []
        for r, col in sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda x: x[1]):
            d = first + col
            ch = self.channels[r]
            if not state[r, col]:
                events.append(OnsetEvent(ch, "offset", d - self.n_off + 1, d))
                continue
            at = d - self.n_on + 1  # where the run that met the rule began
            if hb is not None:
                q = _last_true(~hb[r : r + 1, : col + 1], first, quiet_hb[r : r + 1])
                hb_start = int(q[0]) + 1
                if hb_start <= d and d - hb_start <= self._lookback:
                    at = hb_start  # Hodges-Bui: where the signal left its rest band
            events.append(OnsetEvent(ch, "onset", max(at, d - self._lookback), d))
        return events

    def _close_compiled(self) -> None:
        """The frame close below and `_set_levels`, in one compiled call (same values)."""
        assert self._kernels is not None and isinstance(self._session_ref, np.ndarray)
        s = self.settings
        ratios = (s.on_rest_ratio, s.on_fraction, s.off_rest_ratio, s.off_fraction)
        levels = (self.rest, self.calibrated, self.mvc, self._floor, s.rest_percentile, ratios)
        refs = (self._session_ref, self._k_ref, self._decay)
        state = (self._sum, self._count, self._frame, self._filled)
        # New arrays each close (handed out by the blocks, never edited): rows of one buffer.
        out = np.empty((7, len(self.channels)))
        ready = self._kernels.frame_close(state, self._ring, self._ordered, levels, refs, out)
        rest, rest_now, ref_now, on, off, rest_col, scale_col = out
        self._filled += 1
        self._in_frame = 0
        self.rest = rest
        self._scales = (rest_col, scale_col)
        self._rest_col, self._scale_col = rest_col[:, None], scale_col[:, None]
        self._rest_now, self._reference_now = rest_now, ref_now
        self.on_level, self.off_level = on, off
        self._level_arrays = (on, off)
        # (`_levels`, the lists, only the numpy path's switch reads: not made here.)
        self._ready = bool(ready)

    def _learn(self, seg: np.ndarray, usable: np.ndarray | None, summed: bool = False) -> None:
        """Frame statistics from the segment (`summed`: its row sums are already in `_sum`,
        added by the compiled switch)."""
        if summed:
            self._count += seg.shape[1]
        elif usable is None or all_true(usable):
            self._sum += np.add.reduce(seg, axis=1)  # seg.sum(axis=1) without its wrapper
            self._count += seg.shape[1]
        else:
            self._sum += np.where(usable, seg, 0.0).sum(axis=1)
            self._count += usable.sum(axis=1)
        self._in_frame += seg.shape[1]
        if self._in_frame < self._frame:
            return
        if self._kernels is not None:
            self._close_compiled()
            return
        # A frame mostly unusable (leads settling, electrode off) is no rest and no effort.
        # Per channel on plain floats (sum / count is numpy's float64 division to the bit).
        frame = self._frame
        mean = [
            total / count if 2 * count > frame else math.nan
            for total, count in zip(self._sum.tolist(), self._count.tolist(), strict=True)
        ]
        width = self._ring.shape[1]
        col = self._filled % width
        gone = self._ring[:, col].tolist() if self._filled >= width else [math.nan] * len(mean)
        self._ring[:, col] = mean
        self._filled += 1
        self._in_frame, self._sum[:], self._count[:] = 0, 0.0, 0
        rest = [
            _slide(frames, old, new, self.settings.rest_percentile)
            for frames, old, new in zip(self._sorted, gone, mean, strict=True)
        ]
        kept = zip(self.rest.tolist(), rest, strict=True)
        self.rest = np.array([old if math.isnan(new) else new for old, new in kept])
        # The session reference: the mean of the valid ones among the newest `_k_ref` frames,
        # decaying peak-hold. The same values as numpy's `np.where(valid, frames, 0).sum(1) /
        # valid.sum(1)` and `np.fmax(ref · decay, effort)` over the ring's newest frames, to
        # the bit (tests/feedback/test_block_cost.py checks it against that formula).
        decay, refs = self._decay, self._session_ref
        wrap = self._k_ref > width
        nans = self._recent_nan
        for i, (recent, new) in enumerate(zip(self._recent, mean, strict=True)):
            if len(recent) == recent.maxlen and recent[-1] != recent[-1]:
                nans[i] -= 1  # a NaN frame leaves
            recent.appendleft(new)
            nans[i] += new != new
            frames: Iterable[float] = recent
            if wrap:  # ring positions (newest − j) mod width, j < min(k_ref, frames seen)
                frames = [recent[j % width] for j in range(min(self._k_ref, self._filled))]
            if nans[i]:
                values = [0.0 if v != v else v for v in frames]
                count = sum(v == v for v in frames)
                effort = _ordered_sum(values) / count if count else math.nan
            elif wrap:
                values = list(frames)
                effort = _ordered_sum(values) / len(values)
            else:
                effort = _ordered_sum(recent) / len(recent)
            held = refs[i] * decay
            refs[i] = effort if held != held or effort > held else held
        self._set_levels()
