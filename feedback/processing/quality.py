"""Signal quality per channel, per sample: electrode off / flat, clipping, mains, motion.

Each check compares smoothed powers (one-pole averages with carried state, so any block split
gives the same flags) against thresholds from `QualitySettings`. A flag stays up for `hold_ms`
after its cause has gone, so a cue that was withheld does not flicker back and forth.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np

from config.settings import QualitySettings
from feedback.processing import fused
from feedback.processing import lazy_signal as signal
from feedback.processing.activation import any_true, run_lengths
from feedback.processing.filters import SosFilter
from feedback.processing.records import record


class Flag(enum.IntFlag):
    OK = 0
    FLAT = 1  # electrode off or flat line: no band-passed power at all
    CLIP = 2  # the raw signal reached the amplifier's range
    MAINS = 4  # mains hum dominates the band
    MOTION = 8  # low-frequency movement artefact dominates the band


REASONS = {
    Flag.FLAT: "electrode off / flat line",
    Flag.CLIP: "clipping",
    Flag.MAINS: "mains interference",
    Flag.MOTION: "motion artefact",
}


def describe(flags: int) -> tuple[str, ...]:
    return tuple(text for flag, text in REASONS.items() if flags & flag)


@record
class QualityBlock:
    flags: np.ndarray  # uint8 (n_channels, n): a bitwise OR of `Flag`s per sample

    @property
    def last(self) -> np.ndarray:
        """Flags at the block's last sample, per channel (all OK for an empty block)."""
        n = self.flags.shape[1]
        return self.flags[:, -1] if n else np.zeros(self.flags.shape[0], dtype=np.uint8)


class SignalQuality:
    def __init__(self, settings: QualitySettings, rate_hz: float, n_channels: int) -> None:
        self.settings = settings
        self.n_channels = n_channels
        nyq_guard = 0.45 * rate_hz
        m = float(settings.mains_hz)
        self._mains: SosFilter | None = None
        if m + 3.0 < nyq_guard:
            sos = signal.butter(2, (m - 3.0, m + 3.0), btype="bandpass", fs=rate_hz, output="sos")
            self._mains = SosFilter(sos, n_channels, rate_hz)
        lf = signal.butter(2, (2.0, 15.0), btype="bandpass", fs=rate_hz, output="sos")
        self._lf = SosFilter(lf, n_channels, rate_hz)
        alpha = 1.0 - math.exp(-1000.0 / (settings.smooth_ms * rate_hz))
        # The one-pole average as a second-order section: the fast kernel, not lfilter's wrapper.
        smooth = np.array([[alpha, 0.0, 0.0, 1.0, alpha - 1.0, 0.0]])
        self._smooth = SosFilter(smooth, 3 * n_channels, rate_hz)  # band, mains, LF powers
        # Squared amplitude ratios and floors of the mains and motion checks, (2, 1, 1).
        ratios = (settings.mains_ratio**2, settings.motion_ratio**2)
        self._ratios = np.array(ratios)[:, None, None]
        floors = ((settings.mains_min_uv * 1e-3) ** 2, settings.motion_min_mv**2)
        self._floors = np.array(floors)[:, None, None]
        self._hold = round(settings.hold_ms * rate_hz / 1000.0)
        # The power estimates start from zero; judge them only once they have settled.
        self._warmup = round(3 * settings.smooth_ms * rate_hz / 1000.0)
        self._seen = 0
        # A disconnected input often reads one constant value: catch that within `flat_ms`
        # instead of waiting for the smoothed power to decay.
        self._flat_run = max(2, round(settings.flat_ms * rate_hz / 1000.0))
        self._last_raw = np.full(n_channels, np.nan)
        self._same = np.zeros(n_channels, dtype=np.int64)
        self._since = np.full((4, n_channels), 1 << 40, dtype=np.int64)  # samples since a flag
        self._since_min = 1 << 40  # its smallest value, kept as a plain int
        # Work buffers reused while the block length stays the same (nothing handed out
        # refers to them: the flags returned are new arrays).
        self._n = -1
        self._power = np.empty((3 * n_channels, 0))
        self._raw_flags = np.empty((4, n_channels, 0), dtype=bool)
        # The compiled path (feedback.processing.fused): the same flags in one call a block.
        self._kernels = fused.kernels()
        sections = (0 if self._mains is None else self._mains.sos.shape[0], self._lf.sos.shape[0])
        if sections[0] not in (0, 2) or sections[1] != 2:  # (the kernel's fixed cascades)
            self._kernels = None
        if self._kernels is not None:
            mains = self._mains
            self._filters = (
                mains.sos if mains is not None else np.zeros((0, 6)),
                self._lf.sos,
                self._smooth.sos,
            )
            no_state = np.zeros((n_channels, 0, 2))
            self._states = (
                mains.state if mains is not None else no_state,
                self._lf.state,
                self._smooth.state,
            )
            self._levels = (
                float(settings.clip_mv),
                float((settings.flat_uv * 1e-3) ** 2),
                *(float(v) for v in ratios),
                *(float(v) for v in floors),
            )

    def fused_state(self) -> tuple[Any, ...] | None:
        """The arrays for the fused block (kernels.bind_block: sos and states of the mains,
        LF and smoothing filters, levels, (warm-up, flat run, hold), last raw, run of equal
        values, samples since each flag), or None: no compiled path."""
        if self._kernels is None:
            return None
        counts = np.array([self._warmup, self._flat_run, self._hold], dtype=np.int64)
        levels = np.array(self._levels)
        return (
            self._filters,
            self._states,
            levels,
            counts,
            self._last_raw,
            self._same,
            self._since,
        )

    @property
    def seen(self) -> int:
        """Samples judged so far (the warm-up counts them)."""
        return self._seen

    def advance(self, n: int) -> int:
        """n samples judged by the fused block: the samples judged before them (what the
        block is told as `seen`; one call a block, not a read and a call)."""
        seen = self._seen
        self._seen = seen + n
        return seen

    def process(self, raw: np.ndarray, filtered: np.ndarray) -> QualityBlock:
        """`raw` as it came from the device (mV), `filtered` the chain's band-passed signal."""
        if self._kernels is not None:
            return self._compiled(raw, filtered)
        s = self.settings
        c, n = self.n_channels, raw.shape[1]
        if n != self._n:
            self._power = np.empty((3 * c, n))
            self._raw_flags = np.empty((4, c, n), dtype=bool)
            self._n = n
        # Band, mains and LF signals in one buffer, filtered and squared in place, then
        # smoothed together. The raw rows take the samples as float64 (the filters' type).
        power, raw_flags = self._power, self._raw_flags
        power[:c] = filtered
        power[2 * c :] = raw
        # Clipping on the float64 samples, before the LF filter overwrites them.
        np.greater_equal(np.abs(power[2 * c :]), s.clip_mv, out=raw_flags[1])
        if self._mains is not None:
            power[c : 2 * c] = power[2 * c :]
            self._mains.filter_own(power[c : 2 * c])
        else:
            power[c : 2 * c] = 0.0
        self._lf.filter_own(power[2 * c :])
        np.square(power, out=power)
        self._smooth.filter_own(power)
        band_p, both = power[:c], power[c:].reshape(2, c, n)  # both: mains, LF powers
        np.less(band_p, (s.flat_uv * 1e-3) ** 2, out=raw_flags[0])
        # MAINS and MOTION together: power ≥ ratio² · band power AND ≥ its floor, as one
        # comparison with the larger of the two (NaN fails either way, as with the pair).
        limit = self._ratios * band_p
        np.maximum(limit, self._floors, out=limit)
        np.greater_equal(both, limit, out=raw_flags[2:])
        if self._seen < self._warmup:  # once warmed up every sample is settled: no mask
            raw_flags[[0, 2, 3]] &= (self._seen + np.arange(n) >= self._warmup)[None, None, :]
        self._seen += n
        constant = self._constant(raw)
        if constant is not None:
            raw_flags[0] |= constant
        return QualityBlock(self._held(raw_flags))

    def _compiled(self, raw: np.ndarray, filtered: np.ndarray) -> QualityBlock:
        k = self._kernels
        assert k is not None
        counts = (self._seen, self._warmup, self._flat_run, self._hold)
        flags = np.empty(raw.shape, dtype=np.uint8)
        k.quality_flags(
            np.ascontiguousarray(raw),  # (one compiled layout: a slice is copied)
            filtered,
            self._filters,
            self._states,
            self._levels,
            counts,
            self._last_raw,
            self._same,
            self._since,
            flags,
        )
        self._seen += raw.shape[1]
        return QualityBlock(flags)

    def _constant(self, raw: np.ndarray) -> np.ndarray | None:
        """True where the raw value has not changed for `flat_ms` (None: nowhere)."""
        unchanged = np.empty(raw.shape, dtype=bool)
        if raw.shape[1]:
            np.equal(raw[:, 0], self._last_raw, out=unchanged[:, 0])
            np.equal(raw[:, 1:], raw[:, :-1], out=unchanged[:, 1:])
            self._last_raw = raw[:, -1].copy()
            if not any_true(unchanged):  # the usual block: a live signal changes every sample
                self._same = np.zeros(raw.shape[0], dtype=np.int64)
                return None
        same = run_lengths(unchanged, self._same)
        if raw.shape[1]:
            self._same = same[:, -1].copy()
        return np.asarray(same >= self._flat_run)

    def _held(self, raw_flags: np.ndarray) -> np.ndarray:
        """Keep each flag up for `hold` samples after its last raw occurrence."""
        n = raw_flags.shape[-1]
        if n and self._since_min >= self._hold and not any_true(raw_flags):
            # The usual block: nothing flagged now nor within `hold`, so nothing is held.
            self._since = self._since + n
            self._since_min += n
            return np.zeros(raw_flags.shape[1:], dtype=np.uint8)
        # Samples since the last flagged one = run length of "not flagged" (0 on a flagged one).
        since = run_lengths(~raw_flags, self._since)
        if raw_flags.shape[-1]:
            self._since = since[..., -1].copy()
            self._since_min = int(self._since.min())
        held = since <= self._hold
        if not any_true(held):  # the usual block: a clean signal
            return np.zeros(held.shape[1:], dtype=np.uint8)
        weights = np.array([Flag.FLAT, Flag.CLIP, Flag.MAINS, Flag.MOTION], dtype=np.uint8)
        flags: np.ndarray = np.bitwise_or.reduce(held * weights[:, None, None], axis=0)
        return flags.astype(np.uint8)
