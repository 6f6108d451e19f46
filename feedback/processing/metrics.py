"""Per-contraction metrics (a "rep" as the muscle did it) and the live balance figures.

A contraction runs from the target channel's onset to its offset (feedback.processing.onset).
For each one: peak and mean % MVC, time to reach the band, time held in the band, relaxation
time, median frequency of the raw EMG (a fatigue index: it falls as a muscle tires), the VM–VL
onset difference and the VM:VL envelope ratio. Everything is accumulated per run of samples, so
the figures do not depend on how the signal was split into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from feedback.processing.activation import Zone, run_starts
from feedback.processing.onset import OnsetBlock, OnsetEvent

MAX_CONTRACTION_S = 60.0  # samples kept for the median frequency; longer holds use the last 60 s
LSI_MIN_PCT = 5.0  # below this the uninvolved side is at rest and a ratio would be noise


@dataclass(frozen=True, slots=True)
class Contraction:
    number: int
    channel: str
    onset_index: int
    offset_index: int
    duration_s: float
    peak_pct: float
    mean_pct: float
    time_to_band_s: float | None
    hold_in_band_s: float
    relaxation_s: float | None
    median_freq_hz: float | None
    vm_vl_onset_ms: float | None  # VL onset minus VM onset: positive when VM leads
    vm_vl_ratio: float | None
    # Counted contractions (feedback.processing.contraction_counter) also carry these.
    peak_mv: float | None = None  # envelope, mV: meaningful with or without a calibration
    mean_mv: float | None = None
    longest_hold_s: float | None = None  # longest continuous time in the band (None: no band)
    calibrated: bool = True  # False: the % MVC figures rest on a placeholder MVC


@dataclass(slots=True)
class _Open:
    onset: OnsetEvent
    pct_sum: float = 0.0
    peak: float = 0.0
    n: int = 0
    in_band: int = 0
    first_band: int | None = None
    last_band: int | None = None
    vm_env: float = 0.0
    vl_env: float = 0.0
    samples: list[np.ndarray] = field(default_factory=list)
    kept: int = 0


class ContractionTracker:
    def __init__(
        self, rate_hz: float, channels: tuple[str, ...], target: str, pair_window_ms: float
    ) -> None:
        self.rate_hz = rate_hz
        self.channels = channels
        self.target = target
        self._t = channels.index(target)
        partner = target.replace("VM", "VL")
        self._vm = self._t if target.startswith("VM") else None
        self._vl = channels.index(partner) if partner in channels and partner != target else None
        self._window = round(pair_window_ms * rate_hz / 1000.0)
        self._vl_onsets: list[int] = []
        self._open: _Open | None = None
        self._count = 0
        self._keep = round(MAX_CONTRACTION_S * rate_hz)

    def gap(self) -> None:
        """Samples were lost: a contraction in progress has no known end, so it is dropped
        rather than reported with the lost time inside it."""
        self._open = None

    def process(
        self,
        first_index: int,
        filtered: np.ndarray,
        envelope: np.ndarray,
        pct: np.ndarray,
        zone: np.ndarray,
        onsets: OnsetBlock,
    ) -> list[Contraction]:
        done: list[Contraction] = []
        events = {ev.detected_index: ev for ev in onsets.events if ev.channel == self.target}
        partner = self.channels[self._vl] if self._vl is not None else None
        for vl in onsets.events:
            if vl.channel == partner and vl.kind == "onset":
                self._vl_onsets = [*self._vl_onsets[-7:], vl.at_index]
        active = onsets.active[self._t]
        n = active.shape[0]
        cuts = run_starts(active)
        for s, e in zip(cuts, [*cuts[1:], n], strict=True):
            ev = events.get(first_index + s)
            if ev is not None and ev.kind == "onset":
                self._open = _Open(ev)
            elif ev is not None and self._open is not None:
                done.append(self._close(ev))
            if active[s] and self._open is not None:
                self._accumulate(first_index + s, filtered, envelope, pct, zone, s, e)
        return done

    def _accumulate(
        self,
        at: int,
        filtered: np.ndarray,
        envelope: np.ndarray,
        pct: np.ndarray,
        zone: np.ndarray,
        s: int,
        e: int,
    ) -> None:
        o = self._open
        assert o is not None
        p = pct[self._t, s:e]
        o.pct_sum += float(p.sum())
        o.peak = max(o.peak, float(p.max()))
        o.n += e - s
        band = np.flatnonzero(zone[s:e] == Zone.IN_BAND)
        if band.size:
            o.in_band += int(band.size)
            o.first_band = at + int(band[0]) if o.first_band is None else o.first_band
            o.last_band = at + int(band[-1])
        if self._vm is not None and self._vl is not None:
            o.vm_env += float(envelope[self._vm, s:e].sum())
            o.vl_env += float(envelope[self._vl, s:e].sum())
        o.samples.append(filtered[self._t, s:e].copy())
        o.kept += e - s
        while o.kept - o.samples[0].shape[0] >= self._keep:
            o.kept -= o.samples.pop(0).shape[0]

    def _close(self, offset: OnsetEvent) -> Contraction:
        o = self._open
        assert o is not None
        self._open = None
        self._count += 1
        r = self.rate_hz
        start = o.onset.at_index
        pair = [v for v in self._vl_onsets if abs(v - start) <= self._window]
        vm_vl = min(pair, key=lambda v: abs(v - start)) if pair else None
        return Contraction(
            number=self._count,
            channel=self.target,
            onset_index=start,
            offset_index=offset.at_index,
            duration_s=(offset.at_index - start) / r,
            peak_pct=o.peak,
            mean_pct=o.pct_sum / o.n if o.n else 0.0,
            time_to_band_s=None if o.first_band is None else (o.first_band - start) / r,
            hold_in_band_s=o.in_band / r,
            relaxation_s=None if o.last_band is None else (offset.at_index - o.last_band) / r,
            median_freq_hz=median_frequency(np.concatenate(o.samples), r) if o.samples else None,
            vm_vl_onset_ms=None if vm_vl is None else (vm_vl - start) * 1000.0 / r,
            vm_vl_ratio=o.vm_env / o.vl_env if o.vl_env > 0 else None,
        )


def median_frequency(x: np.ndarray, rate_hz: float) -> float | None:
    """Frequency that splits the Welch power spectrum into two equal halves."""
    if x.shape[0] < 64:
        return None
    f, p = signal.welch(x, fs=rate_hz, nperseg=min(256, x.shape[0]))
    cum = np.cumsum(p)
    if cum[-1] <= 0:
        return None
    return float(np.interp(cum[-1] / 2.0, cum, f))


def limb_symmetry_index(involved_pct: float, uninvolved_pct: float) -> float | None:
    """LSI = 100 · involved / uninvolved (100 = symmetric), None while the other side rests."""
    if uninvolved_pct < LSI_MIN_PCT:
        return None
    return 100.0 * involved_pct / uninvolved_pct
