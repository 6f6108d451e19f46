"""Causal IIR/FIR filters that keep their state across blocks (scipy.signal, `zi` per channel).

scipy.signal comes through `lazy_signal`, which imports it only when a call needs it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from feedback.processing import lazy_signal as signal

SosKernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _load_sos_kernel() -> SosKernel | None:
    """scipy's own C cascade behind `signal.sosfilt`, called directly.

    For a 20-sample block, `sosfilt`'s argument handling (moveaxis, validation, array-API
    conversion, copies) costs about 70 µs against a few µs of filtering, and the pipeline runs
    several such filters per block. The kernel is private to scipy, so it is taken only if it
    loads and reproduces the cascade exactly on a test signal (`lazy_signal.load_sos_kernel`,
    without importing scipy.signal); otherwise every filter uses `signal.sosfilt`, with the
    same results.
    """
    return signal.load_sos_kernel()


SOS_KERNEL = _load_sos_kernel()


class SosFilter:
    """A second-order-sections filter applied along time to (n_channels, n) blocks.

    The state is carried per channel, so streaming block by block gives exactly what one call
    over the whole signal would give. By default scipy's C kernel runs the cascade when it
    passed its check at import; `kernel=None` forces the public `signal.sosfilt`.
    """

    def __init__(
        self,
        sos: np.ndarray,
        n_channels: int,
        rate_hz: float,
        kernel: SosKernel | None = SOS_KERNEL,
    ) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        # The kernel trusts its arguments (the public function checked them): check once here.
        if self.sos.ndim != 2 or self.sos.shape[1] != 6 or not np.all(self.sos[:, 3] == 1.0):
            raise ValueError(f"sos must be (n_sections, 6) with a0 = 1, got {self.sos.shape}")
        self.rate_hz = rate_hz
        self._kernel = kernel
        # The kernel's layout: (n_channels, n_sections, 2), C-contiguous, updated in place.
        self._state = np.zeros((n_channels, sos.shape[0], 2))

    @property
    def state(self) -> np.ndarray:
        """The carried state, (n_channels, n_sections, 2): the compiled kernels
        (feedback.processing.kernels) update it in place, as scipy's kernel does."""
        return self._state

    def process(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[0] != self._state.shape[0]:
            # Also what keeps the kernel inside its state array: it does not check.
            raise ValueError(f"expected ({self._state.shape[0]}, n) samples, got {x.shape}")
        if x.shape[1] == 0:  # (scipy's sosfilt cannot reshape an empty block)
            return np.empty(x.shape, dtype=np.float64)
        if self._kernel is not None:
            return self.filter_own(np.array(x, dtype=np.float64, order="C"))  # a copy
        zi = self._state.transpose(1, 0, 2)
        y, zi = signal.sosfilt(self.sos, x, axis=1, zi=zi)
        self._state = np.ascontiguousarray(np.asarray(zi).transpose(1, 0, 2))
        return np.asarray(y)

    def filter_own(self, y: np.ndarray) -> np.ndarray:
        """`process` for a block the caller owns and gives up: float64, C-contiguous,
        (n_channels, n); filtered in place (no copy) and returned."""
        if self._kernel is None or y.shape[1] == 0:
            return self.process(y)
        if y.shape[0] != self._state.shape[0] or not y.flags.c_contiguous or y.dtype != np.float64:
            raise ValueError(f"expected C-contiguous float64 ({self._state.shape[0]}, n)")
        self._kernel(self.sos, y, self._state)
        return y

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
        # History (width - 1 samples) then the block, in one buffer reused while the block
        # length stays the same, with its windows view made once: per block, two copies and
        # one sum, no allocation of the history nor a new strided view.
        self._ext = np.zeros((n_channels, width - 1))
        self._n = -1
        self._windows = self._ext[:, :0, None]

    def process(self, x: np.ndarray, square: bool = False) -> np.ndarray:
        """The moving average of `x`, or of `x`² with `square` (squared straight into the
        window buffer: no temporary)."""
        n, keep = x.shape[1], self.width - 1
        if n != self._n:
            ext = np.empty((x.shape[0], keep + n))
            ext[:, :keep] = self._ext[:, self._ext.shape[1] - keep :]
            rows, step = ext.strides
            # The same view as sliding_window_view(ext, width, axis=1), made once per length.
            self._windows = np.lib.stride_tricks.as_strided(
                ext, (ext.shape[0], n, self.width), (rows, step, step), writeable=False
            )
            self._ext, self._n = ext, n
        else:
            ext = self._ext
            ext[:, :keep] = ext[:, n:]  # the last width - 1 samples (numpy handles the overlap)
        if square:
            np.multiply(x, x, out=ext[:, keep:])
        else:
            ext[:, keep:] = x
        # np.add.reduce is what ndarray.sum calls, without the Python wrapper around it.
        out: np.ndarray = np.add.reduce(self._windows, axis=2)
        out /= self.width
        return out


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
