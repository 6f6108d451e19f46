"""Muscle onset and offset by the Hodges-Bui rule, per channel, causal and split-invariant.

An onset is declared once the detection signal (the envelope, or a TKEO-conditioned envelope)
has stayed at or above rest mean + k·SD for `hold_ms`; the contraction ends once it has stayed
below rest mean + off_k·SD for `min_off_ms`. Each event carries two indices: where the run
began (`at_index`, the onset a clinician would mark) and where the rule was met
(`detected_index`, the earliest moment a live cue can know it).

Without a calibrated rest, the baseline is learnt from the first `baseline_s` of the signal as
its mean and SD without the samples far above its median (robust to a contraction that starts
before the window ends). A learnt rest baseline keeps being checked: every later window of
`baseline_s` that is clearly quieter (its on-threshold below RELEARN_RATIO of the one in force)
replaces it. A session that opened its device while the muscle was contracting (a device
streams on its own clock) would otherwise keep a threshold at contraction level and never see
an onset. A gap in the sample index (a lost link) ends any run in progress: nothing is known
about the samples that are lost.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from config.settings import OnsetSettings
from feedback.processing import fused
from feedback.processing.activation import (
    DebounceState,
    OnsetBlock,
    OnsetEvent,
    any_true,
    debounce_within,
    select,
)
from feedback.processing.filters import SosFilter, lowpass

__all__ = ["OnsetBlock", "OnsetDetector", "OnsetEvent", "Tkeo"]

RELEARN_RATIO = 0.5  # a window this much quieter than the baseline in force replaces it


class Tkeo:
    """Causal Teager-Kaiser energy ψ[n] = x[n-1]² − x[n]·x[n-2] (one sample late), rectified
    and smoothed; it sharpens onsets by weighting fast, high-frequency activity."""

    def __init__(self, n_channels: int, rate_hz: float, lowpass_hz: float) -> None:
        self._tail = np.zeros((n_channels, 2))
        self._lp = SosFilter(lowpass(lowpass_hz, 2, rate_hz), n_channels, rate_hz)

    def process(self, x: np.ndarray) -> np.ndarray:
        ext = np.concatenate([self._tail, x], axis=1)
        psi = ext[:, 1:-1] ** 2 - ext[:, 2:] * ext[:, :-2]
        self._tail = ext[:, -2:]
        return self._lp.process(np.abs(psi))


MAD_TO_SD = 1.4826  # the MAD of normally distributed values times this estimates their SD
OUTLIER_SPREADS = 5.0  # samples this many robust SDs above the median are not rest
STATS_POINTS = 500  # about this many samples of a baseline window enter its statistics
# The window's points are sorted in runs of this many as they arrive (a run of 4 × 256
# sorts in a few microseconds, a whole window of 500 several times slower), so the window's
# end only merges runs: its median and MAD are then lookups.
SORT_RUN = 256
_NO_MASK = np.zeros((0, 0), dtype=bool)  # the compiled path's "every sample usable"
_NO_STATS = (np.zeros(0), np.zeros(0))  # the compiled add's: the window does not end here
_NOT_LEARNING = (False, 0, 0, 1)  # the fused block's window arguments once none is learnt
_PLANS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # kernels.running_plan


_Window = tuple[np.ndarray, np.ndarray, np.ndarray]  # points, the same sorted, last sample
_Running = tuple[np.ndarray, tuple[np.ndarray, ...]]  # running leaf sums, kernels.running_plan


class _Baseline:
    """One window of `needed` samples of the detection signal, collected block by block.

    Its rest mean and SD leave out two kinds of sample:
    - those the caller marks unusable (signal quality: a flat line while the leads settle or
      an electrode is off is no rest); a channel with half its window or more unusable gets no
      baseline from this window (SD 0: it waits for the next one);
    - those far above the window's median (more than OUTLIER_SPREADS robust SDs, from the
      median absolute deviation): a window that a contraction reaches into (a session whose
      first rest is shorter than `baseline_s`, a relearning window at the end of a short rest)
      still gives the rest figures as long as the muscle was relaxed for more than half of it.
    With every sample counted such windows set the threshold at contraction level, or at 0, and
    onsets came late or never. On a clean rest window nearly every sample is kept, so the
    figures are the classic mean and SD of Hodges and Bui.
    """

    def __init__(self, needed: int, kernels: ModuleType | None = None) -> None:
        self.needed = needed
        # The compiled path keeps each row's points sorted as they arrive (one insertion per
        # point) and their sum running (kernels.baseline_add_running), so the window's end
        # sorts, merges and sums nothing over the points: no spike in that block.
        self._kernels = kernels
        self._window: _Window | None = None
        self._running: _Running | None = None
        self.seen = 0
        # Every `stride`-th sample of the window: the envelope barely changes within a few ms,
        # so ~STATS_POINTS points give the window's rest figures as well as all of them do.
        # Only those points are kept, as they arrive, so the window's end sorts nothing big.
        self.stride = max(1, needed // STATS_POINTS)
        self._points: np.ndarray | None = None
        self._runs: np.ndarray | None = None  # the points, each SORT_RUN of them sorted
        self._sorted_to = 0  # points sorted into `_runs` so far
        self._last: np.ndarray | None = None
        self._stats: tuple[np.ndarray, np.ndarray] | None = None  # (mean, SD), compiled

    def restart(self) -> _Baseline:
        """The next window, in this one's arrays (each value is written before it is read):
        the block that ends a window builds nothing."""
        self.seen, self._sorted_to = 0, 0
        self._last, self._stats = None, None
        return self

    def fused_state(self) -> tuple[np.ndarray, ...] | None:
        """The window's arrays for the fused block (kernels.bind_block: points, sorted
        points, last sample, running sums, (ops, leaf_of), leaves), or None until a first
        block (step by step, compiled) has made them."""
        if self._window is None or self._running is None:
            return None
        run, (leaves, ops, leaf_of) = self._running
        return (*self._window, run, (ops, leaf_of), leaves)  # type: ignore[return-value]

    def fused_done(self, n: int, done: int, sums: np.ndarray) -> None:
        """`add`'s bookkeeping after the fused block took n samples; `done`: the code of
        kernels.baseline_add_window (1: the window's statistics are in sums[:2])."""
        if done == 1:  # (copies: the fused block writes the next block's into `sums`)
            self._stats = (sums[0].copy(), sums[1].copy())
        assert self._window is not None
        self._last = self._window[2]
        self.seen += n

    def add(self, x: np.ndarray, usable: np.ndarray | None) -> None:
        n = x.shape[1]
        if self._points is None:
            self._points = np.empty((x.shape[0], -(-self.needed // self.stride)))
            self._runs = np.empty(self._points.shape)
        if n and self._kernels is not None:
            at = -(-self.seen // self.stride)
            mask = _NO_MASK if usable is None else usable
            skip = -self.seen % self.stride
            x = np.ascontiguousarray(x)  # (one compiled layout)
            if usable is not None:
                mask = np.ascontiguousarray(mask)
            window, running = self._window, self._running
            if window is None or running is None:
                window, running = self._compiled_state()
            # The block that brings the window's last point computes its statistics in the
            # same call (the window may end a few samples later, off the points' grid).
            ends = -(-(self.seen + n) // self.stride) >= window[0].shape[1]
            stats = (np.empty(x.shape[0]), np.empty(x.shape[0])) if ends else _NO_STATS
            done = self._kernels.baseline_add_window(
                x, mask, skip, self.stride, at, window, running, stats
            )
            if done == 1:
                self._stats = stats
            self._last = window[2]
        elif n:
            skip = -self.seen % self.stride  # the first point of the grid in this part
            take = x[:, skip :: self.stride]
            if usable is not None:
                take = np.where(usable[:, skip :: self.stride], take, np.nan)
            at = -(-self.seen // self.stride)
            self._points[:, at : at + take.shape[1]] = take
            self._last = x[:, n - 1].copy()
            self._sort_runs(at + take.shape[1])
        self.seen += n

    def _sort_runs(self, have: int) -> None:
        """Sort each complete run of SORT_RUN points below `have` into `_runs`."""
        assert self._points is not None and self._runs is not None
        while self._sorted_to + SORT_RUN <= have:
            a, b = self._sorted_to, self._sorted_to + SORT_RUN
            self._runs[:, a:b] = np.sort(self._points[:, a:b], axis=1)
            self._sorted_to = b

    def _sorted(self) -> np.ndarray:
        """The window's points sorted per row (the last, partial run sorted now, then the runs
        merged: a stable sort of sorted runs is a merge)."""
        assert self._points is not None and self._runs is not None
        width = self._points.shape[1]
        if self._sorted_to < width:
            a = self._sorted_to
            self._runs[:, a:] = np.sort(self._points[:, a:], axis=1)
            self._sorted_to = width
        if width <= SORT_RUN:
            return self._runs
        return np.sort(self._runs, axis=1, kind="stable")

    def _compiled_state(self) -> tuple[_Window, _Running]:
        """The compiled path's arrays: (points, sorted points, last sample) and (running leaf
        sums, plan of numpy's pairwise sum for the width, kernels.running_plan, once a width)."""
        assert self._kernels is not None and self._points is not None and self._runs is not None
        if self._window is None or self._running is None:
            rows, width = self._points.shape
            plan = _PLANS.get(width)
            if plan is None:
                plan = _PLANS[width] = self._kernels.running_plan(width)
            self._window = (self._points, self._runs, np.empty(rows))
            self._running = (np.empty((rows, plan[0].shape[0], 9)), plan)
        return self._window, self._running

    def last(self) -> np.ndarray:
        assert self._last is not None and self.seen
        return self._last

    def mean_sd(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._points is not None
        if self._stats is not None:  # (the compiled add that ended the window made them)
            return self._stats
        # All channels at once, unusable samples (NaN) as +inf; the median and the MAD are
        # order statistics, found by selection (np.partition, linear) rather than a full sort:
        # the same values, a fraction of the time at the window's end.
        w = self._points[:, : -(-self.seen // self.stride)]
        if self._kernels is not None and w.shape[1] == self._points.shape[1]:
            assert self._runs is not None  # (sorted as the points came)
            _, running = self._compiled_state()
            out = mean, sd = np.empty(w.shape[0]), np.empty(w.shape[0])
            ok = self._kernels.baseline_stats_running(
                self._points, self._runs, running, MAD_TO_SD, OUTLIER_SPREADS, out
            )
            if ok:
                return mean, sd
        elif w.shape[1] == self._points.shape[1]:
            ordered = self._sorted()
            if not any_true(np.isnan(ordered[:, -1])):  # (NaN sorts last)
                return _complete_mean_sd(w, ordered)
        valid = ~np.isnan(w)
        n = valid.sum(axis=1)
        usable = 2 * n > w.shape[1]  # else: mostly unusable, no rest figures from this window
        x = np.where(valid, w, np.inf)
        mid = (np.maximum(n, 1) - 1) // 2  # the (lower) median's rank among the valid
        level = select(x, mid)[:, None]
        with np.errstate(invalid="ignore"):  # inf - inf on a channel with nothing valid
            spread = MAD_TO_SD * select(np.abs(x - level), mid)[:, None]
        rest = valid & ((x <= level + OUTLIER_SPREADS * spread) | ~(spread > 0))
        count = np.maximum(rest.sum(axis=1), 1)
        mean = np.where(rest, x, 0.0).sum(axis=1) / count
        var = np.where(rest, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / count
        return np.where(usable, mean, 0.0), np.where(usable, np.sqrt(var), 0.0)


def _complete_mean_sd(x: np.ndarray, ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_Baseline.mean_sd` for a whole window with every point usable (the usual one), given
    its points `x` and the same points sorted per row: the same values to the bit.

    The median m is the sorted row's middle (rank `mid`). Along the sorted row the deviations
    |s − m| fall to 0 at the median and rise after it, so the `mid + 1` smallest of them are
    a run of consecutive points around it, and the MAD (the deviation of rank `mid`) is the
    smallest, over the runs s[lo .. lo + mid] (lo = 0 .. mid), of the larger of its two end
    deviations: m − s[lo] and s[lo + mid] − m, each |s − m| as the general path computes it.
    The mean and SD then sum the points in arrival order, as the general path does; when no
    point is an outlier (the usual rest window) its masks are all true and drop out."""
    mid = (x.shape[1] - 1) // 2
    level = ordered[:, mid : mid + 1]
    ends = np.subtract(level, ordered[:, : mid + 1])
    np.maximum(ends, np.subtract(ordered[:, mid : 2 * mid + 1], level), out=ends)
    spread = MAD_TO_SD * np.minimum.reduce(ends, axis=1)[:, None]
    limit = level + OUTLIER_SPREADS * spread
    if (spread > 0).all() and (ordered[:, -1:] <= limit).all():
        # Nothing to leave out: the sums of the general path over all-true masks.
        count = np.full(x.shape[0], x.shape[1])
        mean = x.sum(axis=1) / count
        sq = x - mean[:, None]
        np.square(sq, out=sq)
        return mean, np.sqrt(sq.sum(axis=1) / count)
    rest = x <= limit
    if not (spread > 0).all():  # (else the median's half of the points is always kept)
        rest |= ~(spread > 0)
    count = np.maximum(rest.sum(axis=1), 1)
    mean = np.where(rest, x, 0.0).sum(axis=1) / count
    sq = x - mean[:, None]
    np.square(sq, out=sq)
    var = np.where(rest, sq, 0.0).sum(axis=1) / count
    return mean, np.sqrt(var)


class OnsetDetector:
    def __init__(
        self,
        settings: OnsetSettings,
        rate_hz: float,
        channels: tuple[str, ...],
        baseline: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """`baseline` = rest (mean, SD) of the detection signal per channel; when None it is
        learnt from the first `baseline_s` of the signal, during which nothing is active."""
        self.settings = settings
        self.channels = channels
        self.rate_hz = rate_hz
        self.n_on = max(1, round(settings.hold_ms * rate_hz / 1000.0))
        self.n_off = max(1, round(settings.min_off_ms * rate_hz / 1000.0))
        self._carry = DebounceState.zeros(len(channels))
        self._reach = (self.n_on, self.n_off)
        self._window = max(1, round(settings.baseline_s * rate_hz))
        self._kernels = fused.kernels()
        self._learning: _Baseline | None = _Baseline(self._window, self._kernels)
        self._fused: tuple[_Baseline | None, tuple[Any, ...]] | None = None  # fused_state's
        self._no_window: tuple[Any, ...] | None = None
        self._settle = 0  # samples still to ignore after a gap
        self.on_threshold = np.full(len(channels), np.inf)
        self.off_threshold = np.full(len(channels), np.inf)
        self._levels = (self.on_threshold.tolist(), self.off_threshold.tolist())
        self._level_arrays = (self.on_threshold, self.off_threshold)
        self.baseline: tuple[np.ndarray, np.ndarray] | None = None
        if baseline is not None:
            self.use_baseline(*baseline)

    def use_baseline(self, mean: np.ndarray, sd: np.ndarray) -> None:
        """A calibrated rest (mean, SD) replaces whatever was learnt, from the next block on,
        and is trusted as it is: no more learning from the signal."""
        self._set_baseline(mean, sd)
        self._learning = None

    def _set_baseline(self, mean: np.ndarray, sd: np.ndarray) -> None:
        s = self.settings
        self.baseline = (mean, sd)
        # No spread at all is no rest to compare with (a flat line, leads not yet connected):
        # such a channel waits, at an infinite threshold, for a window that has one.
        usable = sd > 0
        self.on_threshold = np.where(usable, mean + s.k_sd * sd, np.inf)
        self.off_threshold = np.where(usable, mean + s.off_k_sd * sd, np.inf)
        self._levels = (self.on_threshold.tolist(), self.off_threshold.tolist())
        self._level_arrays = (self.on_threshold, self.off_threshold)

    def fused_state(self) -> tuple[Any, ...] | None:
        """(reach, the switch's runs, the rest window's arrays: `_Baseline.fused_state`, k_sd) for
        the fused block (kernels.bind_block), the same tuple while the window is the same (else
        bind again); None: the window's arrays are not made yet."""
        learning = self._learning
        if learning is None:
            if self._no_window is None:
                rows = len(self.channels)
                no_plan = (np.zeros(0, np.int64), np.zeros(0, np.int64))
                empty = (np.zeros((rows, 0)), np.zeros((rows, 0)), np.zeros(rows))
                self._no_window = (
                    *empty,
                    np.zeros((rows, 0, 9)),
                    no_plan,
                    np.zeros((0, 2), np.int64),
                )
            window: tuple[Any, ...] | None = self._no_window
        else:
            window = learning.fused_state()
        if window is None:
            return None
        if self._fused is None or self._fused[0] is not learning:
            window = (*window, float(self.settings.k_sd))  # (the relearn test's k)
            self._fused = (learning, (self._reach, self._carry.run_arrays(), *window))
        return self._fused[1]

    def fused_args(self, n: int) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]] | None:
        """For a usual block of n samples (no settling, inside one rest window): `fused_state`,
        the switch's (on, off, state, whether a baseline is known) and the window's (learning,
        point index, skip, stride); None for another block (step by step), or while the
        window's arrays are not made."""
        learning = self._learning
        if self._settle or (learning is not None and n > learning.needed - learning.seen):
            return None
        # The bound state, unless the window changed: one call a block, not two, and no
        # tuple of the window's arrays built only to be compared.
        fused = self._fused
        state = fused[1] if fused is not None and fused[0] is learning else self.fused_state()
        if state is None:
            return None
        switch = (*self._level_arrays, self._carry.state, self.baseline is not None)
        if learning is None:
            return state, switch, _NOT_LEARNING
        # The window's (learning, point index, skip, stride), from its public counters here
        # rather than in a call of its own each block.
        seen, stride = learning.seen, learning.stride
        return state, switch, (True, -(-seen // stride), -seen % stride, stride)

    def fused_done(self, code: int, hb: np.ndarray, sums: np.ndarray) -> None:
        """After the fused block (kernels.block_step's `code`, its Hodges-Bui switch `hb`,
        its `sums`): the switch's new state, the window's bookkeeping and end. (The block's
        events are not made: the pipeline hands on the activation's.)"""
        n = hb.shape[1]
        if code & 1:
            self._carry.state = hb[:, n - 1].copy()  # (the switch's state at the block's end)
        learning = self._learning
        if learning is None:
            return
        done = (code >> 8) & 3
        ends = done == 1 and learning.seen + n >= learning.needed
        if ends and self.baseline is not None and not code & 1024:
            # The window ends here and the kernel found no row quieter than the baseline in
            # force (`_window_done`'s test): nothing changes but the next window, and this
            # once-a-second block runs no cold Python.
            self._learning = learning.restart()
            return
        learning.fused_done(n, done, sums)
        if learning.seen >= learning.needed:
            self._window_done(learning)

    def gap(self, settle: int) -> None:
        """The next samples do not follow the last ones: no run continues across the hole, and
        the first `settle` samples after it are ignored while the envelope, still holding
        samples from before the hole, refills (the filters keep their state: resetting them
        would turn an amplifier's DC offset into a step and a false onset)."""
        self._carry.reset()
        self._settle = settle
        if self._learning is not None:
            self._learning = _Baseline(self._window, self._kernels)

    def process(
        self,
        first_index: int,
        x: np.ndarray,
        usable: np.ndarray | None = None,
        extremes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> OnsetBlock:
        """`usable` (bool, like x; None: all) marks the samples a rest baseline may learn from;
        `extremes`, when the caller has them, each row's (minimum, maximum) of x: the pipeline
        finds them once for this detector and the activation detector, which read the same
        envelope."""
        # Cut the block where a baseline window ends, so thresholds change at the same sample
        # however the signal was split into blocks.
        n = x.shape[1]
        events: list[OnsetEvent] = []
        pos = min(n, self._settle)
        self._settle -= pos
        learning = self._learning
        if pos == 0 and n and (learning is None or n <= learning.needed - learning.seen):
            # The usual block: no window ends inside it (at most at its last sample, which
            # changes the thresholds from the next block on), so they hold for all of it.
            active, above = self._segment(first_index, x, usable, events, extremes)
            return OnsetBlock(active, tuple(events), self.baseline is not None, above)
        active = np.zeros(x.shape, dtype=bool)
        above = np.zeros(x.shape, dtype=bool)
        while pos < n:
            learning = self._learning
            end = n if learning is None else min(n, pos + learning.needed - learning.seen)
            ok = None if usable is None else usable[:, pos:end]
            state, over = self._segment(first_index + pos, x[:, pos:end], ok, events)
            active[:, pos:end], above[:, pos:end] = state, over
            pos = end
        return OnsetBlock(active, tuple(events), self.baseline is not None, above)

    def _segment(
        self,
        first: int,
        part: np.ndarray,
        usable: np.ndarray | None,
        events: list[OnsetEvent],
        extremes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples within one baseline window (thresholds fixed): the switch, the samples at
        or above the on-threshold, then learning from them (which may end the window)."""
        if self.baseline is not None:
            before = self._carry.state  # replaced, never edited, by the debounce
            on, off, carry = self._levels[0], self._levels[1], self._carry
            if self._kernels is not None:
                state, above = np.empty(part.shape, dtype=bool), np.empty(part.shape, dtype=bool)
                new = np.empty(before.shape, dtype=bool)
                switched, moved = self._kernels.debounce(
                    np.ascontiguousarray(part),  # (one compiled layout: a slice is copied)
                    self._level_arrays,
                    self._reach,
                    before,
                    carry.run_arrays(),
                    (state, above, new),
                )
                if switched:
                    carry.state = new
                if moved:
                    events += self._edges(first, before, state)
            else:
                if extremes is None:
                    extremes = (part.min(axis=1), part.max(axis=1)) if part.shape[1] else None
                state = debounce_within(part, extremes, on, off, self.n_on, self.n_off, carry)
                above = part >= self.on_threshold[:, None]
                events += self._edges(first, before, state)
        else:
            state, above = np.zeros(part.shape, dtype=bool), np.zeros(part.shape, dtype=bool)
        learning = self._learning
        if learning is not None:
            learning.add(part, usable)
            if learning.seen >= learning.needed:
                self._window_done(learning)
        return state, above

    def _window_done(self, learning: _Baseline) -> None:
        mean, sd = learning.mean_sd()
        if self.baseline is None:
            self._set_baseline(mean, sd)
            # A channel already above threshold started its contraction before anything could
            # be judged: it counts as on, without an onset (whose time is unknown), until it
            # relaxes. Otherwise both channels would "start" together at this sample.
            self._carry.state = learning.last() >= self.on_threshold
            self._learning = learning.restart()
            return
        self._learning = learning.restart()
        # On plain floats (the same float64 operations): four numpy calls on a handful of
        # values cost tens of microseconds in this once-a-second block, cold.
        k = self.settings.k_sd
        rows = zip(mean.tolist(), sd.tolist(), self._levels[0], strict=True)
        quieter = [s > 0 and m + k * s < RELEARN_RATIO * on for m, s, on in rows]
        if any(quieter):
            old_mean, old_sd = self.baseline
            self._set_baseline(np.where(quieter, mean, old_mean), np.where(quieter, sd, old_sd))

    def _edges(self, first: int, before: np.ndarray, state: np.ndarray) -> list[OnsetEvent]:
        if not state.shape[1] or not any_true(state != before[:, None]):
            return []  # the usual block: no channel switched
        prev = np.concatenate([before[:, None], state[:, :-1]], axis=1)
        rows, cols = np.nonzero(state != prev)
        events = []
        for r, c in sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda rc: rc[1]):
            detected = first + c
            if state[r, c]:
                events.append(
                    OnsetEvent(self.channels[r], "onset", detected - self.n_on + 1, detected)
                )
            else:
                events.append(
                    OnsetEvent(self.channels[r], "offset", detected - self.n_off + 1, detected)
                )
        return events
