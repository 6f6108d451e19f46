"""What a counted contraction carries (feedback.processing.contraction_counter computes it, once,
for every output: docs/metrics.md), and the live balance figures: the median frequency of the
raw EMG (a fatigue index: it falls as a muscle tires) and the limb symmetry index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedback.processing import lazy_signal as signal

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
    # The session's first effort, uncalibrated: True, its start settled at its end; False, it
    # could not be (its start is the early live switch-on); None, nothing to settle.
    settled: bool | None = None


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
