"""Many sessions in one process, processed together: S sessions × C channels as one array.

The per-sample work (filters, envelope, quality, onsets, band zones) is the same numpy call for
all sessions, so its Python overhead is paid once per block rather than once per session. Each
session keeps its own calibration (one row of MVC per channel) and its own filter state (one
row of every `zi`). The per-session bookkeeping that follows (exercise, cues, metrics) touches
a few scalars per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.settings import Settings
from devices.base import SampleBlock
from feedback.processing.activation import (
    ActivationDetector,
    DebounceState,
    Zone,
    debounce_levels,
)
from feedback.processing.chain import EmgChain
from feedback.processing.onset import OnsetDetector
from feedback.processing.quality import Flag, SignalQuality


@dataclass(frozen=True, slots=True, eq=False)
class MultiBlock:
    envelope: np.ndarray  # (S, C, n)
    pct_mvc: np.ndarray  # (S, C, n)
    active: np.ndarray  # (S, C, n) activation state (ActivationDetector)
    flags: np.ndarray  # (S, C, n) quality
    zone: np.ndarray  # (S, n) target channel's zone


class MultiSessionChain:
    def __init__(
        self, settings: Settings, rate_hz: float, channels: tuple[str, ...], sessions: int
    ) -> None:
        self.sessions, self.n_channels = sessions, len(channels)
        rows = tuple(f"{c}" for _ in range(sessions) for c in channels)
        self.chain = EmgChain(settings.processing, settings.calibration, rate_hz, rows)
        self.quality = SignalQuality(settings.quality, rate_hz, len(rows))
        self.onset = OnsetDetector(settings.onset, rate_hz, rows)
        self.activation = ActivationDetector(
            settings.activation, rate_hz, rows, settings.calibration
        )
        self._target = channels.index(settings.target.channel)
        t = settings.target
        self._band = (t.low_pct, t.high_pct, t.hysteresis_pct)
        ms = rate_hz / 1000.0
        self._min = (max(1, round(t.min_on_ms * ms)), max(1, round(t.min_off_ms * ms)))
        self._low = DebounceState.zeros(sessions)
        self._high = DebounceState.zeros(sessions)
        self._rate = rate_hz
        self._rows = rows

    def process(self, first_index: int, data: np.ndarray) -> MultiBlock:
        """`data` (S, C, n) float32 mV, all sessions' blocks of the same length."""
        s, c, n = data.shape
        flat = data.reshape(s * c, n)
        block = SampleBlock(first_index, 0.0, self._rate, self._rows, flat)
        p = self.chain.process(block)
        q = self.quality.process(flat, p.filtered)
        usable = (q.flags & Flag.FLAT) == 0
        o = self.activation.process(
            first_index, p.envelope, self.onset.process(first_index, p.envelope, usable), usable
        )
        pct = p.pct_mvc.reshape(s, c, n)[:, self._target]
        lo, hi, h = self._band
        over_low = debounce_levels(pct, lo, lo - h, *self._min, self._low)
        over_high = debounce_levels(pct, hi + h, hi, *self._min, self._high)
        zone = np.where(over_high, Zone.ABOVE, np.where(over_low, Zone.IN_BAND, Zone.BELOW))
        flags = q.flags.reshape(s, c, n)
        zone = np.where(flags[:, self._target] != 0, Zone.BELOW, zone).astype(np.int8)
        return MultiBlock(
            p.envelope.reshape(s, c, n),
            p.pct_mvc.reshape(s, c, n),
            o.active.reshape(s, c, n),
            flags,
            zone,
        )
