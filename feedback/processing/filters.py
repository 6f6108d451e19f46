"""Causal IIR/FIR filters that keep their state across blocks (scipy.signal, `zi` per channel)."""

from __future__ import annotations

import numpy as np
from scipy import signal


class SosFilter:
    """A second-order-sections filter applied along time to (n_channels, n) blocks.

    The state has shape (n_sections, n_channels, 2), so streaming block by block gives exactly
    what one call over the whole signal would give.
    """

    def __init__(self, sos: np.ndarray, n_channels: int, rate_hz: float) -> None:
        self.sos = sos
        self.rate_hz = rate_hz
        self._zi = np.zeros((sos.shape[0], n_channels, 2))

    def process(self, x: np.ndarray) -> np.ndarray:
        y, self._zi = signal.sosfilt(self.sos, x, axis=1, zi=self._zi)
        return np.asarray(y)

    def group_delay_s(self, freq_hz: float) -> float:
        return sos_group_delay_s(self.sos, freq_hz, self.rate_hz)


class FirFilter:
    """A causal FIR (moving average, for example) with carried-over history."""

    def __init__(self, taps: np.ndarray, n_channels: int) -> None:
        self.taps = taps
        self._zi = np.zeros((n_channels, len(taps) - 1))

    def process(self, x: np.ndarray) -> np.ndarray:
        y, self._zi = signal.lfilter(self.taps, 1.0, x, axis=1, zi=self._zi)
        return np.asarray(y)


class MovingAverage:
    """Causal mean of the last `width` samples per channel, carrying `width - 1` samples of
    history. Each output is the sum of exactly its own window (a strided view, no FIR call), so
    the result is the same to the bit however the signal is split into blocks, and a short
    block costs a few microseconds instead of scipy's per-row `lfilter` FIR path."""

    def __init__(self, width: int, n_channels: int) -> None:
        self.width = width
        self._buf = np.zeros((n_channels, width - 1))

    def process(self, x: np.ndarray) -> np.ndarray:
        ext = np.concatenate([self._buf, x], axis=1)
        self._buf = ext[:, ext.shape[1] - (self.width - 1) :]
        rows, step = ext.strides
        n = x.shape[1]
        # The same view as sliding_window_view(ext, width, axis=1), without its checks' overhead.
        windows = np.lib.stride_tricks.as_strided(
            ext, (ext.shape[0], n, self.width), (rows, step, step), writeable=False
        )
        return np.asarray(windows.sum(axis=2) / self.width)


def bandpass(low_hz: float, high_hz: float, order: int, rate_hz: float) -> np.ndarray:
    # Keep the upper edge below Nyquist so a 1 kHz recording still gets a valid band-pass.
    high = min(high_hz, 0.45 * rate_hz)
    return np.asarray(
        signal.butter(order, (low_hz, high), btype="bandpass", fs=rate_hz, output="sos")
    )


def mains_notch(mains_hz: float, rate_hz: float, q: float = 30.0) -> np.ndarray:
    """Notches at the mains frequency and its harmonics below Nyquist."""
    sections = []
    f = mains_hz
    while f < 0.45 * rate_hz:
        b, a = signal.iirnotch(f, q, fs=rate_hz)
        sections.append(signal.tf2sos(b, a))
        f += mains_hz
    return np.vstack(sections)


def lowpass(cutoff_hz: float, order: int, rate_hz: float) -> np.ndarray:
    return np.asarray(signal.butter(order, cutoff_hz, btype="lowpass", fs=rate_hz, output="sos"))


def sos_group_delay_s(sos: np.ndarray, freq_hz: float, rate_hz: float) -> float:
    """Group delay −dφ/dω at one frequency, from the unwrapped phase around it."""
    df = max(freq_hz * 1e-3, 1e-3)
    freqs = np.array([max(freq_hz - df, 1e-6), freq_hz + df])
    _, h = signal.sosfreqz(sos, worN=freqs, fs=rate_hz)
    phase = np.unwrap(np.angle(h))
    return float(-(phase[1] - phase[0]) / (2 * np.pi * (freqs[1] - freqs[0])))
