"""Contractions counted live, without a protocol: a causal, streaming form of the one rule in
feedback.processing.contractions (a run of activation of at least `min_on_s`, after merging runs
separated by dips shorter than `merge_gap_s`).

The counter reads the target channel's activation state sample by sample and knows a contraction
is over only once its dip has lasted `merge_gap_s` (until then the effort may resume and the dip
be merged); it reports it then, with its metrics, so every number is final when it is sent. A
run still open when the session ends is reported by `finish()`. The spans are those of the
offline rule over the whole array, whatever the block sizes (tested).

Per contraction: duration; peak and mean envelope (mV, always) and % MVC (only meaningful when
a calibration is in use: `calibrated` says so); time to band, time in band, the longest
continuous hold in the band and the relaxation from the band (when a band is given); the VM:VL
envelope ratio and the VM–VL onset difference (Hodges–Bui onsets nearest the contraction's
start), and the median frequency of the raw EMG (a fatigue index).

Metrics of samples in a dip are kept aside and join the contraction only if the dip is merged,
so a contraction's figures cover exactly its span. Pure: no I/O, no clock.

The first effort of an uncalibrated session is settled when it ends. Its switch-on was judged
before any effort had set the session reference, so against the rest multiple alone
(docs/activation.md): on real recordings it began about 0.3 s early and lasted 0.4 s too long.
Given `settle_level` (the activation detector's on level of the target that judged a sample,
None where the reference is not the session one), the counter keeps copies of the rows that
contraction's figures read and, at its end, starts it at its first active sample that reaches
the on level in force at that end (the reference having seen the effort), its figures computed
over that span. Its VM–VL onset difference stays the pairing of the switch-on: Hodges–Bui
onsets do not depend on the reference, and the VM onset of the effort precedes the switch-on,
so it may lie out of the pair window of the settled start.

Only the contraction that starts with the session's first activation of the target is settled
(not "the first counted": a blip too short to count, or a contraction dropped by a gap, was an
effort the session reference has seen, so a later switch-on was not judged without it), and
only when the reference that judged its switch-on was the session one (a calibrated target
keeps nothing). `Contraction.settled` says what happened: True, its start was judged against
the level in force at its end (moved, or kept where it already reached it); False, it should
have been and could not (held longer than MAX_CONTRACTION_S, the level no longer known, or no
sample reaching it): its start is the live switch-on; None, nothing to settle.
Whether it counts is still the live rule's; the live activation state (the cue) is unchanged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from feedback.processing.activation import Zone, run_starts
from feedback.processing.contractions import MERGE_GAP_S, MIN_ON_S
from feedback.processing.metrics import MAX_CONTRACTION_S, Contraction, median_frequency
from feedback.processing.records import record

__all__ = ["MERGE_GAP_S", "MIN_ON_S", "ContractionCounter", "CounterInput"]

ONSETS_KEPT = 32  # recent Hodges–Bui onsets per channel, for pairing with a contraction


@dataclass(slots=True)
class _Runs:
    """Continuous runs of "in band" over a stretch of samples, combinable left to right:
    the run at its start (prefix), at its end (suffix) and the longest inside."""

    n: int = 0
    prefix: int = 0
    suffix: int = 0
    longest: int = 0

    @classmethod
    def of(cls, in_band: np.ndarray) -> _Runs:
        n = int(in_band.shape[0])
        if not n:
            return cls()
        if in_band.all():
            return cls(n, n, n, n)
        off = np.flatnonzero(~in_band)
        prefix, suffix = int(off[0]), n - 1 - int(off[-1])
        # Longest run of True: the largest gap between consecutive False positions, minus one.
        bounds = np.r_[-1, off, n]
        return cls(n, prefix, suffix, int(np.diff(bounds).max()) - 1)

    def then(self, b: _Runs) -> _Runs:
        if not self.n:
            return b
        if not b.n:
            return self
        prefix = self.prefix if self.prefix < self.n else self.n + b.prefix
        suffix = b.suffix if b.suffix < b.n else b.n + self.suffix
        longest = max(self.longest, b.longest, self.suffix + b.prefix)
        return _Runs(self.n + b.n, prefix, suffix, longest)


@dataclass(slots=True)
class _Stretch:
    """Sums over consecutive samples (a contraction so far, or a dip that may join it)."""

    n: int = 0
    env_sum: float = 0.0
    env_peak: float = 0.0
    pct_sum: float = 0.0
    pct_peak: float = 0.0
    vm_sum: float = 0.0
    vl_sum: float = 0.0
    in_band: int = 0
    first_band: int | None = None
    last_band: int | None = None
    runs: _Runs = field(default_factory=_Runs)
    raw: list[np.ndarray] = field(default_factory=list)
    kept: int = 0

    def add(self, stretch: _Stretch, keep: int) -> None:
        self.n += stretch.n
        self.env_sum += stretch.env_sum
        self.env_peak = max(self.env_peak, stretch.env_peak)
        self.pct_sum += stretch.pct_sum
        self.pct_peak = max(self.pct_peak, stretch.pct_peak)
        self.vm_sum += stretch.vm_sum
        self.vl_sum += stretch.vl_sum
        self.in_band += stretch.in_band
        if self.first_band is None:
            self.first_band = stretch.first_band
        if stretch.last_band is not None:
            self.last_band = stretch.last_band
        self.runs = self.runs.then(stretch.runs)
        self.raw.extend(stretch.raw)
        self.kept += stretch.kept
        # The median frequency reads the last MAX_CONTRACTION_S at most: bounded memory.
        while self.raw and self.kept - self.raw[0].shape[0] >= keep:
            self.kept -= self.raw.pop(0).shape[0]


@record
class CounterInput:
    """One block as the counter reads it; every array covers the same samples."""

    first_index: int
    active: np.ndarray  # bool (n,): the target channel's activation state
    envelope: np.ndarray  # (n_channels, n) mV
    pct_mvc: np.ndarray  # (n_channels, n)
    filtered: np.ndarray  # (n_channels, n) band-passed EMG, for the median frequency
    zone: np.ndarray | None = None  # int8 (n,) against the target band; None: no band
    onsets: tuple[tuple[str, int], ...] = ()  # (channel, onset sample index), Hodges–Bui


class ContractionCounter:
    def __init__(
        self,
        rate_hz: float,
        channels: tuple[str, ...],
        target: str,
        *,
        min_on_s: float = MIN_ON_S,
        merge_gap_s: float = MERGE_GAP_S,
        pair_window_ms: float = 300.0,
        calibrated: bool = True,
        settle_level: Callable[[int], float | None] | None = None,
    ) -> None:
        if rate_hz <= 0 or min_on_s < 0 or merge_gap_s < 0:
            raise ValueError("rate_hz must be > 0, min_on_s and merge_gap_s ≥ 0")
        self.rate_hz = rate_hz
        self.channels = channels
        self.target = target
        self.calibrated = calibrated
        self._t = channels.index(target)
        partner = target.replace("VM", "VL")
        self._vm = self._t if target.startswith("VM") else None
        self._vl = channels.index(partner) if partner in channels and partner != target else None
        self._shortest = round(min_on_s * rate_hz)
        self._gap = max(1, round(merge_gap_s * rate_hz))  # a dip this long ends a contraction
        self._window = round(pair_window_ms * rate_hz / 1000.0)
        self._keep = round(MAX_CONTRACTION_S * rate_hz)
        self._onsets: dict[str, deque[int]] = {}
        self._start: int | None = None  # first sample of the open contraction
        self._end = 0  # one past its last active sample
        self._span = _Stretch()
        self._dip = _Stretch()  # samples since `_end`: join the span if activation resumes
        self.count = 0
        # The rows settling reads: the target, then its VL partner (for the VM:VL ratio).
        self._rows = [self._t] if self._vl is None else [self._t, self._vl]
        self._effort_seen = False  # the target has been active (a contraction has started)
        self._settling = False  # the open contraction is to be settled at its end
        # Copies of its blocks' rows while it is open (None: not kept), at most `_keep` samples.
        self._held: list[CounterInput] | None = None
        self._held_n = 0
        self._settle_level = settle_level
        self._last = -1  # the last sample seen, for a contraction open at the end

    @property
    def contracting(self) -> bool:
        """A contraction is open and already long enough to count (a live "push" state)."""
        return self._start is not None and self._end - self._start >= self._shortest

    @property
    def open(self) -> bool:
        """A contraction has started and not yet ended: a block without activation and
        without onsets changes nothing while none is (`process` may then be skipped)."""
        return self._start is not None

    def gap(self) -> None:
        """Samples were lost: a contraction in progress has no known end, so it is dropped
        rather than reported with the lost time inside it."""
        self._start, self._span, self._dip = None, _Stretch(), _Stretch()
        self._held, self._settling = None, False

    @property
    def kept_bytes(self) -> int:
        """Bytes the held blocks keep alive (the arrays they view included): 0 unless the open
        contraction is to be settled."""
        bases: dict[int, int] = {}
        for b in self._held or ():
            for a in (b.active, b.envelope, b.pct_mvc, b.filtered, b.zone):
                while isinstance(a, np.ndarray) and isinstance(a.base, np.ndarray):
                    a = a.base
                if isinstance(a, np.ndarray):
                    bases[id(a)] = a.nbytes
        return sum(bases.values())

    def process(self, block: CounterInput) -> list[Contraction]:
        for ch, at in block.onsets:
            self._onsets.setdefault(ch, deque(maxlen=ONSETS_KEPT)).append(at)
        active = block.active
        n = active.shape[0]
        first = block.first_index
        done: list[Contraction] = []
        self._last = first + n - 1
        if self._held is not None:
            self._hold(block)
        cuts = run_starts(active)
        for s, e in zip(cuts, [*cuts[1:], n], strict=True):
            if active[s]:
                if self._start is None:
                    self._start = first + s
                    if self._settles(self._start):
                        self._settling, self._held, self._held_n = True, [], 0
                        self._hold(block)
                    self._effort_seen = True
                else:  # the dip was shorter than the gap: it is part of the effort
                    self._span.add(self._dip, self._keep)
                self._dip = _Stretch()
                self._span.add(self._stretch(block, s, e), self._keep)
                self._end = first + e
            elif self._start is not None:
                need = self._gap - self._dip.n
                if e - s >= need:
                    if (c := self._close(first + s + need - 1)) is not None:
                        done.append(c)
                else:
                    self._dip.add(self._stretch(block, s, e), self._keep)
        return done

    def finish(self) -> list[Contraction]:
        """The session ended: a contraction still open counts, ending at its last active
        sample (as the offline rule counts a run open at the end of the array)."""
        c = self._close(self._last) if self._start is not None else None
        return [] if c is None else [c]

    def _settles(self, start: int) -> bool:
        """The contraction switched on at `start` is to be settled: the session's first
        activation of the target, judged against the session reference (module docstring)."""
        level = self._settle_level
        return not self._effort_seen and level is not None and level(start) is not None

    def _hold(self, block: CounterInput) -> None:
        self._held_n += block.active.shape[0]
        if self._held is None or self._held_n > self._keep:
            self._held = None  # a hold this long: its start is reported as it was switched
            return
        self._held.append(self._rows_of(block))

    def _rows_of(self, b: CounterInput) -> CounterInput:
        """Copies of what settling reads of a block (the block's arrays are views of per-block
        arrays of every channel): envelope of the target and its partner, % MVC and filtered
        EMG of the target alone (the settling counter reads no other row of those)."""
        t = self._t
        return CounterInput(
            b.first_index,
            b.active.copy(),
            b.envelope[self._rows],  # (a list index: a copy)
            b.pct_mvc[t : t + 1].copy(),
            b.filtered[t : t + 1].copy(),
            None if b.zone is None else b.zone.copy(),
        )

    def _stretch(self, b: CounterInput, s: int, e: int) -> _Stretch:
        env, pct = b.envelope[self._t, s:e], b.pct_mvc[self._t, s:e]
        out = _Stretch(
            n=e - s,
            env_sum=float(env.sum()),
            env_peak=float(env.max()),
            pct_sum=float(pct.sum()),
            pct_peak=float(pct.max()),
            raw=[b.filtered[self._t, s:e].copy()],
            kept=e - s,
        )
        if self._vm is not None and self._vl is not None:
            out.vm_sum = float(b.envelope[self._vm, s:e].sum())
            out.vl_sum = float(b.envelope[self._vl, s:e].sum())
        if b.zone is not None:
            in_band = b.zone[s:e] == Zone.IN_BAND
            out.runs = _Runs.of(in_band)
            hits = np.flatnonzero(in_band)
            if hits.size:
                out.in_band = int(hits.size)
                out.first_band = b.first_index + s + int(hits[0])
                out.last_band = b.first_index + s + int(hits[-1])
        return out

    def _close(self, at: int) -> Contraction | None:
        """The open contraction ends; `at`: the sample that ended it (its dip's last, or the
        session's last)."""
        start, end, span = self._start, self._end, self._span
        assert start is not None
        held, settling = self._held, self._settling
        self._start, self._span, self._dip = None, _Stretch(), _Stretch()
        self._held, self._settling = None, False
        if end - start < self._shortest or not span.n:
            return None
        r = self.rate_hz
        vm_on, vl_on = self._pair(start, end)  # the switch-on's pairing, settled or not
        onset_ms = None if vm_on is None or vl_on is None else (vl_on - vm_on) * 1e3 / r
        settled = None
        if settling:
            from_at = None if held is None else self._settled_start(held, start, end, at)
            settled = from_at is not None
            if held is not None and from_at is not None and from_at > start:
                if (c := self._settled(held, from_at)) is not None:
                    self.count += 1
                    return replace(c, number=self.count, vm_vl_onset_ms=onset_ms, settled=True)
                settled = False
        self.count += 1
        raw = np.concatenate(span.raw) if span.raw else np.zeros(0)
        has_band = span.runs.n > 0
        return Contraction(
            number=self.count,
            channel=self.target,
            onset_index=start,
            offset_index=end,
            duration_s=(end - start) / r,
            peak_pct=span.pct_peak,
            mean_pct=span.pct_sum / span.n,
            time_to_band_s=None if span.first_band is None else (span.first_band - start) / r,
            hold_in_band_s=span.in_band / r,
            relaxation_s=None if span.last_band is None else (end - 1 - span.last_band) / r,
            median_freq_hz=median_frequency(raw, r),
            vm_vl_onset_ms=onset_ms,
            vm_vl_ratio=span.vm_sum / span.vl_sum if span.vl_sum > 0 else None,
            peak_mv=span.env_peak,
            mean_mv=span.env_sum / span.n,
            longest_hold_s=span.runs.longest / r if has_band else None,
            calibrated=self.calibrated,
            settled=settled,
        )

    def _settled_start(self, held: list[CounterInput], start: int, end: int, at: int) -> int | None:
        """The contraction's first active sample at or above the on level that judged sample
        `at` (its end), None when that level is not known or no sample reaches it."""
        on_mv = None if self._settle_level is None else self._settle_level(at)
        if on_mv is None:
            return None
        for b in held:
            lo, hi = max(start - b.first_index, 0), min(end - b.first_index, b.active.shape[0])
            if hi <= lo:
                continue
            hits = np.flatnonzero(b.active[lo:hi] & (b.envelope[0, lo:hi] >= on_mv))
            if hits.size:
                return b.first_index + lo + int(hits[0])
        return None

    def _settled(self, held: list[CounterInput], at: int) -> Contraction | None:
        """The contraction from `at` on, its figures computed afresh from the held rows by
        the same rule (None: nothing counted from there)."""
        # A counter of its own over the held rows, activation cleared before `at`: dips are
        # merged and figures summed exactly as live (min_on 0: whether it counts is decided).
        again = ContractionCounter(
            self.rate_hz,
            tuple(self.channels[i] for i in self._rows),
            self.target,
            min_on_s=0.0,
            merge_gap_s=self._gap / self.rate_hz,
            pair_window_ms=self._window * 1000.0 / self.rate_hz,
            calibrated=self.calibrated,
        )
        found: list[Contraction] = []
        for b in held:
            keep = b.first_index + np.arange(b.active.shape[0]) >= at
            found += again.process(replace(b, active=b.active & keep))
        found += again.finish()
        return found[0] if found else None

    def _pair(self, start: int, end: int) -> tuple[int | None, int | None]:
        """The VM onset nearest the contraction's start (from `pair_window` before it to its
        end) and the VL onset nearest that VM onset within the pair window."""
        if self._vm is None or self._vl is None:
            return None, None
        vms = self._onsets.get(self.channels[self._vm], ())
        vm = _nearest(vms, start, start - self._window, end)
        if vm is None:
            return None, None
        vls = self._onsets.get(self.channels[self._vl], ())
        return vm, _nearest(vls, vm, vm - self._window, vm + self._window + 1)


def _nearest(candidates: Iterable[int], to: int, lo: int, hi: int) -> int | None:
    inside = [c for c in candidates if lo <= c < hi]
    return min(inside, key=lambda c: (abs(c - to), c)) if inside else None
