"""Per-repetition metrics: one summary per work period, for the rep message, the clinic log and
its reports, the local session log and the dashboard's rep table.

A rep's muscle figures are NOT computed here: they are those of the contraction the counter
(feedback.processing.contraction_counter) found in the work period, so the live view, the JSON
report, the rep message, the clinic database and the clinic report show one number for one rep
(docs/metrics.md). This module only pairs each work period with its contraction and adds what
belongs to the period itself: whether the hold was achieved (from the exercise), its duration,
and the two sides' symmetry (bilateral setups).

Pairing: the first contraction whose onset lies in [work cue − pair window, end of the period).
A contraction is reported only once its dip has outlasted the merge gap, often after the
period has closed, so a closed period waits for it (see `_settled` for when it stops waiting).

With no contraction in the period the level fields (peak / mean % MVC) are those of the work
period's target channel, and hold, time in band, time to band, onset difference and VM:VL are
0 or None: there was no effort to measure.

A period whose contraction is still going when the next work period begins waits for it (it may
be in its closing dip), at most until a second newer period begins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedback.contraction_report import contraction_metrics
from feedback.exercise import Phase, PhaseChanged, RepCompleted
from feedback.pipeline import Tick
from feedback.processing.metrics import Contraction

# The rep field ← the contraction field it is (one computation, two names kept for the v1
# message contract; docs/metrics.md).
REP_FROM_CONTRACTION = {
    "peak_pct_mvc": "peak_pct",
    "mean_pct_mvc": "mean_pct",
    "time_to_band_s": "time_to_band_s",
    "time_in_band_s": "hold_in_band_s",
    "vm_vl_ratio": "vm_vl_ratio",
    "onset_diff_ms": "vm_vl_onset_ms",
    "median_freq_hz": "median_freq_hz",
}


@dataclass(slots=True)
class _Period:
    period: int
    start: int
    end: int | None = None
    samples: int = 0
    pct_sum: float = 0.0
    peak: float = 0.0
    side_peaks: dict[str, float] = field(default_factory=dict)
    rep: RepCompleted | None = None
    contraction: Contraction | None = None
    superseded: int = 0  # newer work periods begun since


class RepMetrics:
    def __init__(
        self,
        channels: tuple[str, ...],
        target: str,
        rate_hz: float,
        pair_window_ms: float = 300.0,
    ) -> None:
        self.channels = channels
        self.rate_hz = rate_hz
        self._target = channels.index(target)
        self._window = round(pair_window_ms * rate_hz / 1000.0)
        base = target.split("_")[0]
        self._sides = [c for c in channels if c in (f"{base}_L", f"{base}_R")]
        self._open: _Period | None = None
        self._pending: list[_Period] = []

    def update(self, tick: Tick, *, counting: bool = True) -> list[dict[str, Any]]:
        """`counting=False` (free practice): its one endless work period is no rep, and none
        is reported for it."""
        if not counting:
            self._open, self._pending = None, []
            return []
        block = tick.processed.block
        at = block.first_index
        for ev in tick.exercise.events:
            if not isinstance(ev, PhaseChanged):
                continue
            self._accumulate(tick, at, ev.at_index)
            at = ev.at_index
            if self._open is not None:
                self._open.end = ev.at_index
                self._pending.append(self._open)
                self._open = None
            if ev.phase is Phase.WORK:
                for p in self._pending:
                    p.superseded += 1
                self._open = _Period(ev.rep, ev.at_index)
        self._accumulate(tick, at, block.end_index)
        for rep in tick.exercise.events:
            if not isinstance(rep, RepCompleted):
                continue
            if self._open is not None and rep.at_index >= self._open.start:
                self._open.rep = rep
            elif self._pending:  # the hold was reached in a period this block also closed
                self._pending[-1].rep = rep
        for c in tick.contractions:
            self._pair(c)
        done: list[dict[str, Any]] = []
        while self._pending and self._settled(self._pending[0], tick.contracting):
            done.append(self._report(self._pending.pop(0)))
        return done

    @staticmethod
    def _settled(p: _Period, contracting: bool) -> bool:
        """No contraction can still join `p`: it has one; or a newer period began and none is
        in progress (one in progress may have begun in `p` and be in its closing dip); or two
        newer periods began (an effort held that long is not this period's alone)."""
        return (
            p.contraction is not None or p.superseded >= 2 or (p.superseded > 0 and not contracting)
        )

    def finish(
        self, last: tuple[Contraction, ...] | list[Contraction] = ()
    ) -> list[dict[str, Any]]:
        """Periods not yet reported when the session ends (with `last`, the contraction the
        counter closed at the end), the open one cut short."""
        for c in last:
            self._pair(c)
        if self._open is not None:
            self._pending.append(self._open)
            self._open = None
        out = [self._report(p) for p in self._pending]
        self._pending = []
        return out

    def _pair(self, c: Contraction) -> None:
        periods = [*self._pending, *([self._open] if self._open is not None else [])]
        for p in periods:
            if p.contraction is not None:
                continue
            if p.start - self._window <= c.onset_index and (p.end is None or c.onset_index < p.end):
                p.contraction = c
                return

    def _accumulate(self, tick: Tick, start: int, stop: int) -> None:
        p = self._open
        if p is None or stop <= start:
            return
        first = tick.processed.block.first_index
        a, b = start - first, stop - first
        pct = tick.processed.pct_mvc[:, a:b]
        target = pct[self._target]
        p.samples += b - a
        p.pct_sum += float(target.sum())
        p.peak = max(p.peak, float(target.max()))
        for i, ch in enumerate(self.channels):
            if ch in self._sides:
                p.side_peaks[ch] = max(p.side_peaks.get(ch, 0.0), float(pct[i].max()))

    def _report(self, p: _Period) -> dict[str, Any]:
        symmetry = None
        if len(p.side_peaks) == 2 and max(p.side_peaks.values()) > 0:
            symmetry = round(100 * min(p.side_peaks.values()) / max(p.side_peaks.values()), 1)
        out: dict[str, Any] = {
            "period": p.period,
            "achieved": p.rep is not None,
            "rep": None if p.rep is None else p.rep.rep,
            "at_index": None if p.rep is None else p.rep.at_index,
            "start_index": p.start,
            "duration_s": round(p.samples / self.rate_hz, 3),
            "symmetry_pct": symmetry,
            "contraction": None,
            # No contraction: the level of the period; no effort, so nothing else to measure.
            "peak_pct_mvc": round(p.peak, 4),
            "mean_pct_mvc": round(p.pct_sum / max(p.samples, 1), 4),
            "hold_s": 0.0,
            "time_in_band_s": 0.0,
            "time_to_band_s": None,
            "vm_vl_ratio": None,
            "onset_diff_ms": None,
            "median_freq_hz": None,
        }
        if (c := p.contraction) is not None:
            m = contraction_metrics(c)
            out.update({k: m[src] for k, src in REP_FROM_CONTRACTION.items()})
            out["hold_s"] = m["longest_hold_s"] or 0.0
            out["contraction"] = c.number
        return out
