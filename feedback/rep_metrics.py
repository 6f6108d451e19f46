"""Per-repetition metrics: one summary per work period, for the clinic log and its reports.

Pure and synchronous like the rest of processing: it reads each `Tick` (per-sample % MVC,
envelopes and zone, plus the exercise's phase events) and, when a work period closes, returns
its metrics. Work periods are cut at the exact sample of the phase change, so the result does
not depend on how the samples were split into blocks.

- peak / mean % MVC of the target channel during the work period;
- hold_s: longest continuous time in the target band; time_in_band_s: all of it;
- vm_vl_ratio: mean VM envelope / mean VL envelope over the work period;
- onset_diff_ms: VL onset minus VM onset (positive: VM led, the pattern retraining aims for),
  an onset being the first sample at or above `onset_pct` % MVC in the period;
- symmetry_pct: 100 × smaller / larger peak of the two sides' target muscle, when the device
  has both (e.g. VM_L and VM_R); None on a one-sided setup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedback.exercise import Phase, PhaseChanged, RepCompleted
from feedback.pipeline import Tick
from feedback.processing.activation import Zone

ONSET_PCT = 10.0


@dataclass(slots=True)
class _Period:
    period: int
    start: int
    samples: int = 0
    pct_sum: float = 0.0
    peak: float = 0.0
    side_peaks: dict[str, float] = field(default_factory=dict)
    env_sum: dict[str, float] = field(default_factory=dict)
    onset: dict[str, int] = field(default_factory=dict)
    run: int = 0
    longest_run: int = 0
    in_band: int = 0
    rep: RepCompleted | None = None


class RepMetrics:
    def __init__(
        self, channels: tuple[str, ...], target: str, rate_hz: float, onset_pct: float = ONSET_PCT
    ) -> None:
        self.channels = channels
        self.rate_hz = rate_hz
        self.onset_pct = onset_pct
        self._target = channels.index(target)
        base = target.split("_")[0]
        self._sides = [c for c in channels if c in (f"{base}_L", f"{base}_R")]
        self._open: _Period | None = None

    def update(self, tick: Tick, *, counting: bool = True) -> list[dict[str, Any]]:
        """`counting=False` (free practice): its one endless work period is no rep, and none
        is reported for it."""
        if not counting:
            self._open = None
            return []
        block = tick.processed.block
        cuts = [ev for ev in tick.exercise.events if isinstance(ev, PhaseChanged)]
        done: list[dict[str, Any]] = []
        at = block.first_index
        for ev in cuts:
            self._accumulate(tick, at, ev.at_index)
            at = ev.at_index
            if self._open is not None:
                done.append(self._close())
            if ev.phase is Phase.WORK:
                self._open = _Period(ev.rep, ev.at_index)
        self._accumulate(tick, at, block.end_index)
        for rep in tick.exercise.events:
            if not isinstance(rep, RepCompleted):
                continue
            if self._open is not None and rep.at_index >= self._open.start:
                self._open.rep = rep
            elif done:  # the hold was reached in a period this block also closed
                done[-1].update(_rep_fields(rep))
        return done

    def finish(self) -> dict[str, Any] | None:
        """Metrics of a work period cut short by the end of the session, if one is open."""
        return self._close() if self._open is not None else None

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
            p.env_sum[ch] = p.env_sum.get(ch, 0.0) + float(tick.processed.envelope[i, a:b].sum())
            if ch in self._sides:
                p.side_peaks[ch] = max(p.side_peaks.get(ch, 0.0), float(pct[i].max()))
            if ch not in p.onset:
                over = np.flatnonzero(pct[i] >= self.onset_pct)
                if over.size:
                    p.onset[ch] = start + int(over[0])
        for in_band in (tick.zone[a:b] == Zone.IN_BAND).tolist():
            p.run = p.run + 1 if in_band else 0
            p.in_band += in_band
            p.longest_run = max(p.longest_run, p.run)

    def _close(self) -> dict[str, Any]:
        p = self._open
        assert p is not None
        self._open = None
        n = max(p.samples, 1)
        vm, vl = p.env_sum.get("VM"), p.env_sum.get("VL")
        onset_diff = None
        if "VM" in p.onset and "VL" in p.onset:
            onset_diff = round((p.onset["VL"] - p.onset["VM"]) / self.rate_hz * 1000, 1)
        symmetry = None
        if len(p.side_peaks) == 2 and max(p.side_peaks.values()) > 0:
            symmetry = round(100 * min(p.side_peaks.values()) / max(p.side_peaks.values()), 1)
        out: dict[str, Any] = {
            "period": p.period,
            "achieved": False,
            "rep": None,
            "at_index": None,
            "time_to_band_s": None,
            "start_index": p.start,
            "duration_s": round(p.samples / self.rate_hz, 3),
            "peak_pct_mvc": round(p.peak, 2),
            "mean_pct_mvc": round(p.pct_sum / n, 2),
            "hold_s": round(p.longest_run / self.rate_hz, 3),
            "time_in_band_s": round(p.in_band / self.rate_hz, 3),
            "vm_vl_ratio": round(vm / vl, 3) if vm is not None and vl else None,
            "onset_diff_ms": onset_diff,
            "symmetry_pct": symmetry,
        }
        if p.rep is not None:
            out.update(_rep_fields(p.rep))
        return out


def _rep_fields(ev: RepCompleted) -> dict[str, Any]:
    return {
        "achieved": True,
        "rep": ev.rep,
        "at_index": ev.at_index,
        "time_to_band_s": None if ev.time_to_band_s is None else round(ev.time_to_band_s, 3),
    }
