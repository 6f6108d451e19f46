"""Plausible surface EMG for the emulated firmware and the simulator (pure numpy/scipy, streaming).

Surface EMG is well modelled, for biofeedback purposes, as shaped Gaussian noise whose standard
deviation follows the muscle's drive. Each channel gets its own noise, its own copy of
the contract/relax profile (VL shifted by the VM–VL onset delay), additive electrode noise and
optional mains hum. Generation is by sample index, so any split into calls gives the same signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# scipy.signal is imported where it is used: importing it costs about 0.6 s, and this module
# comes in with the simulator even when a session replays a file.


@dataclass(frozen=True, slots=True)
class ContractionProfile:
    """Trapezoidal contractions: rest, then repeated (ramp up, plateau, ramp down, relax).

    With `reps_per_set` > 0 the contractions come in sets: after each set's last one the
    relaxation lasts `set_rest_s` instead of `relax_s` (as an exercise protocol's set rest)."""

    first_rest_s: float = 1.3
    contract_s: float = 4.0
    relax_s: float = 6.0
    ramp_s: float = 0.3
    level: float = 0.45  # fraction of MVC on the plateau
    reps_per_set: int = 0  # 0: one endless set
    set_rest_s: float = 0.0

    def drive(self, t: np.ndarray) -> np.ndarray:
        """Fraction of MVC at times `t` (seconds)."""
        period = self.contract_s + self.relax_s
        since = t - self.first_rest_s
        tc = np.mod(since, period)
        if self.reps_per_set > 0:
            set_period = self.reps_per_set * period - self.relax_s + self.set_rest_s
            in_set = np.mod(since, set_period)
            rep = np.floor(in_set / period)
            # Past the set's last contraction: relaxing until the next set starts.
            tc = np.where(rep < self.reps_per_set, in_set - rep * period, self.contract_s)
        ramp = max(self.ramp_s, 1e-9)
        rise = np.clip(tc / ramp, 0.0, 1.0)
        fall = np.clip((self.contract_s - tc) / ramp, 0.0, 1.0)
        shape = np.minimum(rise, fall)
        return np.where(t < self.first_rest_s, 0.0, shape * self.level)


@dataclass(frozen=True, slots=True)
class ChannelModel:
    role: str
    mvc_rms_mv: float = 0.5
    onset_delay_s: float = 0.0  # shift of this channel's profile relative to the script
    gain: float = 1.0  # amplitude relative to the script (e.g. VL vs VM)


class SyntheticEmg:
    """Callable source: `source(n)` returns the next `n` samples, shape (n_channels, n), in mV."""

    def __init__(
        self,
        rate_hz: float,
        channels: tuple[ChannelModel, ...],
        profile: ContractionProfile,
        *,
        baseline_noise_mv: float = 0.005,
        mains_hz: float = 0.0,
        mains_mv: float = 0.0,
        band_hz: tuple[float, float] = (20.0, 450.0),
        band_only: bool = False,
        seed: int = 1,
    ) -> None:
        self.rate_hz = rate_hz
        self.channels = channels
        self.profile = profile
        self.baseline_noise_mv = baseline_noise_mv
        self.mains_hz = mains_hz
        self.mains_mv = mains_mv
        # One stream per channel and per noise: drawing a (channels, n) block from one shared
        # stream hands each channel different numbers depending on how the samples are split
        # into calls, and the simulator's block sizes follow wall-clock timing.
        streams = np.random.SeedSequence(seed).spawn(2 * len(channels))
        self._carrier_rngs = [np.random.default_rng(s) for s in streams[: len(channels)]]
        self._noise_rngs = [np.random.default_rng(s) for s in streams[len(channels) :]]
        self._sos = carrier_sos(rate_hz, band_hz, band_only=band_only)
        self._zi = np.zeros((self._sos.shape[0], len(channels), 2))
        self._unit_gain = 1.0 / _noise_rms_gain(self._sos)
        self._index = 0

    @property
    def index(self) -> int:
        return self._index

    def __call__(self, n: int) -> np.ndarray:
        from scipy import signal

        idx = self._index + np.arange(n)
        t = idx / self.rate_hz
        white = np.stack([rng.standard_normal(n) for rng in self._carrier_rngs])
        carrier, self._zi = signal.sosfilt(self._sos, white, axis=1, zi=self._zi)
        carrier *= self._unit_gain
        out = np.empty((len(self.channels), n))
        for i, ch in enumerate(self.channels):
            drive = self.profile.drive(t - ch.onset_delay_s) * ch.gain
            out[i] = carrier[i] * drive * ch.mvc_rms_mv
        out += (
            np.stack([rng.standard_normal(n) for rng in self._noise_rngs]) * self.baseline_noise_mv
        )
        if self.mains_hz and self.mains_mv:
            out += self.mains_mv * np.sin(2 * np.pi * self.mains_hz * t)
        self._index += n
        return out


# Corners of the muscle's spectral shape (Shwedyk, Balasubramanian & Scott, "A nonstationary
# model for the electromyogram", IEEE Trans. Biomed. Eng. 24(5), 1977): power rising as f² from
# the low corner, falling as 1/f⁴ past the high one. With these corners, behind the amplifier's
# band, the median frequency is ~90 Hz and the mean ~110 Hz, as in quadriceps surface EMG (the
# UCI recordings replayed through the pipeline give a median of 67–74 Hz); the amplifier's band
# alone spreads the power evenly to 450 Hz and puts the median near 230 Hz.
SHWEDYK_LOW_HZ = 60.0
SHWEDYK_HIGH_HZ = 120.0
# The slowest rate the shape can be made at: its high corner must lie inside the band kept below
# Nyquist (0.45 · rate, as for the band-pass). Slower, the pre-warp's tan() first runs away and
# then, below 2 · 120 Hz, turns negative: a pole in the right half-plane, noise growing without
# bound. Refused rather than quietly flattened: the caller asked for a muscle's spectrum.
MIN_SHAPED_RATE_HZ = SHWEDYK_HIGH_HZ / 0.45


def carrier_sos(
    rate_hz: float, band_hz: tuple[float, float] = (20.0, 450.0), *, band_only: bool = False
) -> np.ndarray:
    """Shaping filter for unit white noise: the amplifier's band-pass, then the muscle's shape.

    `band_only` leaves the flat band-pass alone (the old carrier, kept as a negative control).
    Raises ValueError below `MIN_SHAPED_RATE_HZ`, where the muscle's shape cannot be made."""
    from scipy import signal

    if not band_only and not rate_hz >= MIN_SHAPED_RATE_HZ:
        raise ValueError(
            f"{rate_hz:g} Hz is too slow for the muscle's spectral shape (its "
            f"{SHWEDYK_HIGH_HZ:g} Hz corner needs at least {MIN_SHAPED_RATE_HZ:.0f} Hz); "
            "surface EMG wants 500 Hz or more"
        )
    high = min(band_hz[1], 0.45 * rate_hz)
    band = signal.butter(4, (band_hz[0], high), btype="bandpass", fs=rate_hz, output="sos")
    if band_only:
        return np.asarray(band)
    return np.vstack([band, muscle_shape_sos(rate_hz)])


def muscle_shape_sos(rate_hz: float) -> np.ndarray:
    """The muscle's shape alone, unchecked: `carrier_sos` refuses the rates it cannot be made at."""
    from scipy import signal

    # Pre-warped corners: without them the bilinear transform pulls the high corner down at the
    # low rates settings allow (500 Hz), and the median would drift with the rate.
    low_w, high_w = (
        2.0 * rate_hz * np.tan(np.pi * f / rate_hz) for f in (SHWEDYK_LOW_HZ, SHWEDYK_HIGH_HZ)
    )
    # One zero at DC, a pole at the low corner and a double pole at the high corner: the
    # amplitude response whose square is the model's power spectrum.
    z, p, k = signal.bilinear_zpk([0.0], [-low_w, -high_w, -high_w], high_w**2, rate_hz)
    return np.asarray(signal.zpk2sos(z, p, k))


def _noise_rms_gain(sos: np.ndarray) -> float:
    """RMS of the filter's output for unit white noise: the root of its impulse response energy."""
    from scipy import signal

    impulse = np.zeros(8192)
    impulse[0] = 1.0
    h = signal.sosfilt(sos, impulse)
    return float(np.sqrt(np.sum(h**2)))
