"""The per-channel chain: band-pass (+ notch) → rectify/square → envelope → % MVC."""

from __future__ import annotations

from typing import Any

import numpy as np

from config.settings import CalibrationSettings, ProcessingSettings
from devices.base import SampleBlock
from feedback.processing import fused
from feedback.processing.filters import (
    MovingAverage,
    SosFilter,
    bandpass,
    lowpass,
    mains_notch,
)
from feedback.processing.records import record

# Surface-EMG power sits around 50–150 Hz; the band-pass delay is quoted there.
EMG_REFERENCE_HZ = 100.0


@record
class ProcessedBlock:
    block: SampleBlock
    filtered: np.ndarray  # band-passed EMG, mV
    envelope: np.ndarray  # mV (RMS or low-passed rectified)
    pct_mvc: np.ndarray  # envelope normalised to the calibration, % MVC


class EmgChain:
    """Stateful causal chain for all channels of one device at once."""

    def __init__(
        self,
        settings: ProcessingSettings,
        calibration: CalibrationSettings,
        rate_hz: float,
        channels: tuple[str, ...],
    ) -> None:
        n = len(channels)
        self.channels = channels
        self.settings = settings
        sos = bandpass(settings.highpass_hz, settings.lowpass_hz, settings.bandpass_order, rate_hz)
        if settings.notch_hz:
            sos = np.vstack([sos, mains_notch(settings.notch_hz, rate_hz)])
        self._band = SosFilter(sos, n, rate_hz)
        self._rms: MovingAverage | None = None
        self._env_lp: SosFilter | None = None
        if settings.envelope == "rms":
            width = max(1, round(settings.rms_window_ms * rate_hz / 1000.0))
            self._rms = MovingAverage(width, n)
            # The compiled path's moving-RMS history: the last width - 1 squares per channel.
            self._squares = np.zeros((n, width - 1))
            envelope_delay = (width - 1) / 2 / rate_hz
        else:
            self._env_lp = SosFilter(
                lowpass(settings.envelope_lowpass_hz, settings.envelope_lowpass_order, rate_hz),
                n,
                rate_hz,
            )
            # The envelope's useful content is the contraction itself, around 1 Hz.
            envelope_delay = self._env_lp.group_delay_s(1.0)
        self.group_delay_ms = 1000.0 * (self._band.group_delay_s(EMG_REFERENCE_HZ) + envelope_delay)
        missing = [c for c in channels if c not in calibration.mvc_mv]
        mvc = [calibration.mvc_mv.get(c, 1.0) for c in channels]
        rest = [calibration.rest_mv.get(c, 0.0) for c in channels]
        self.uncalibrated = tuple(missing)
        self._set_scale(np.asarray(mvc)[:, None], np.asarray(rest)[:, None])
        # The compiled path (feedback.processing.fused): the same values in one call a block.
        self._kernels = fused.kernels()
        if self._kernels is not None and self._rms is not None:
            self._plan = self._kernels.pairwise_plan(self._rms.width)

    def _set_scale(self, mvc: np.ndarray, rest: np.ndarray) -> None:
        self._mvc, self._rest = mvc, rest
        self._span = mvc - rest  # the divisor of %MVC, once per calibration, not per block
        self._scale = (self._rest[:, 0].copy(), self._span[:, 0].copy())  # (the kernel's)
        self._fused: tuple[Any, ...] | None = None

    def fused_state(self) -> tuple[Any, ...]:
        """The chain's arrays for the fused block (kernels.bind_block: rms, band-pass sos and
        state, squares, plan, low-pass sos and state, rest, span), the very arrays this chain
        keeps; a new tuple after a calibration, so a caller knows to bind again."""
        if self._fused is None:
            rows = len(self.channels)
            rms, lp = self._rms is not None, self._env_lp
            plan = self._plan if rms else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
            self._fused = (
                rms,
                self._band.sos,
                self._band.state,
                self._squares if rms else np.zeros((rows, 0)),
                *plan,
                lp.sos if lp is not None else np.zeros((0, 6)),
                lp.state if lp is not None else np.zeros((rows, 0, 2)),
                *self._scale,
            )
        return self._fused

    def set_calibration(self, calibration: CalibrationSettings) -> None:
        """A calibration made during the session: %MVC uses it from the next block."""
        self.uncalibrated = tuple(c for c in self.channels if c not in calibration.mvc_mv)
        self._set_scale(
            np.asarray([calibration.mvc_mv.get(c, 1.0) for c in self.channels])[:, None],
            np.asarray([calibration.rest_mv.get(c, 0.0) for c in self.channels])[:, None],
        )

    def process(self, block: SampleBlock) -> ProcessedBlock:
        if self._kernels is not None:
            return self._compiled(block)
        filtered = self._band.filter_own(np.array(block.data, dtype=np.float64, order="C"))
        if self._rms is not None:
            # A sum of squares is never negative, so the square root needs no clip.
            envelope = self._rms.process(filtered, square=True)
            np.sqrt(envelope, out=envelope)
        else:
            assert self._env_lp is not None
            envelope = self._env_lp.filter_own(np.abs(filtered))
            np.maximum(envelope, 0.0, out=envelope)
        # 100 · max(envelope − rest, 0) / (mvc − rest), the same operations in place.
        pct = envelope - self._rest
        np.maximum(pct, 0.0, out=pct)
        pct *= 100.0
        pct /= self._span
        return ProcessedBlock(block=block, filtered=filtered, envelope=envelope, pct_mvc=pct)

    def _compiled(self, block: SampleBlock) -> ProcessedBlock:
        k = self._kernels
        assert k is not None
        band = self._band
        raw = np.ascontiguousarray(block.data)  # (one compiled layout: a slice is copied)
        shape = raw.shape
        out = filtered, envelope, pct = np.empty(shape), np.empty(shape), np.empty(shape)
        if self._rms is not None:
            k.chain_rms(raw, band.sos, band.state, self._squares, self._plan, self._scale, out)
        else:
            lp = self._env_lp
            assert lp is not None
            k.chain_lowpass(raw, band.sos, band.state, lp.sos, lp.state, self._scale, out)
        return ProcessedBlock(block=block, filtered=filtered, envelope=envelope, pct_mvc=pct)
