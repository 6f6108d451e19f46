"""The simulated EMG has a muscle's spectrum and does not depend on how it is read.

Median frequency as the product reports it (feedback.processing.metrics.median_frequency on
each counted contraction, through the whole Pipeline): quadriceps surface EMG sits around
60–120 Hz, and the UCI recordings replayed through the same pipeline give 67–74 Hz. The old
carrier, the amplifier's flat 20–450 Hz band alone, put it near 215 Hz.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import signal

from config.loader import load_settings
from devices.base import SampleBlock
from feedback.pipeline import Pipeline
from firmware_bridge.synthetic_emg import (
    MIN_SHAPED_RATE_HZ,
    ChannelModel,
    ContractionProfile,
    SyntheticEmg,
    carrier_sos,
    muscle_shape_sos,
)

ROLES = ("VM", "VL")
MODELS = (ChannelModel("VM", 0.5), ChannelModel("VL", 0.5, onset_delay_s=0.03))
PROFILE = ContractionProfile(first_rest_s=2.0, contract_s=3.0, relax_s=3.0, ramp_s=0.1)
MUSCLE_MEDIAN_HZ = (60.0, 130.0)
MUSCLE_MEAN_HZ = (70.0, 140.0)


def simulated(rate_hz: float, seconds: float, *, band_only: bool) -> np.ndarray:
    src = SyntheticEmg(rate_hz, MODELS, PROFILE, band_only=band_only, seed=7)
    return np.asarray(src(round(seconds * rate_hz)), dtype=np.float32)


def contraction_medians(data: np.ndarray, rate_hz: float) -> list[float]:
    pipe = Pipeline(load_settings(environ={}), rate_hz, ROLES)
    medians, step = [], round(0.02 * rate_hz)
    for start in range(0, data.shape[1], step):
        block = SampleBlock(start, start / rate_hz, rate_hz, ROLES, data[:, start : start + step])
        medians += [c.median_freq_hz for c in pipe.process(block).contractions]
    assert all(m is not None for m in medians)
    return [m for m in medians if m is not None]


def plateau_mean_frequency(data: np.ndarray, rate_hz: float) -> float:
    """Mean frequency of VM over the first plateau (the product reports only the median)."""
    x = data[0, round(2.2 * rate_hz) : round(4.9 * rate_hz)]
    f, p = signal.welch(x, fs=rate_hz, nperseg=256)
    return float(np.sum(f * p) / np.sum(p))


@pytest.mark.parametrize("rate_hz", [2000.0, 1000.0])
@pytest.mark.parametrize("variant", ["correct", "flat_band"])
def test_contractions_have_a_muscle_like_median_frequency(rate_hz: float, variant: str) -> None:
    data = simulated(rate_hz, 20.0, band_only=variant == "flat_band")
    medians = contraction_medians(data, rate_hz)
    assert len(medians) == 3  # onsets at 2, 8 and 14 s
    low, high = MUSCLE_MEDIAN_HZ
    ok = all(low <= m <= high for m in medians)
    assert ok is (variant == "correct"), medians
    if variant == "flat_band":
        assert min(medians) > 150.0, medians


@pytest.mark.parametrize("rate_hz", [2000.0, 1000.0])
@pytest.mark.parametrize("variant", ["correct", "flat_band"])
def test_the_mean_frequency_is_plausible(rate_hz: float, variant: str) -> None:
    mean_hz = plateau_mean_frequency(
        simulated(rate_hz, 5.0, band_only=variant == "flat_band"), rate_hz
    )
    low, high = MUSCLE_MEAN_HZ
    assert (low <= mean_hz <= high) is (variant == "correct"), mean_hz


@pytest.mark.parametrize("rate_hz", [500.0, 1000.0, 2000.0, 10_000.0])
def test_the_carrier_keeps_its_rms_at_every_rate(rate_hz: float) -> None:
    """The drive sets the RMS whatever the shaping (the MVC calibration rests on it)."""
    always_on = ContractionProfile(first_rest_s=0.0, contract_s=1e9, ramp_s=0.0, level=0.4)
    src = SyntheticEmg(rate_hz, MODELS[:1], always_on, baseline_noise_mv=0.0, seed=2)
    x = src(round(20 * rate_hz))[0]
    assert float(np.sqrt(np.mean(x**2))) == pytest.approx(0.4 * 0.5, rel=0.05)


def shared_stream_source(seed: int) -> Callable[[int], np.ndarray]:
    """The old draw: each call takes a (channels, n) block from one stream, so a channel's
    numbers depend on where the calls split the samples."""
    rng = np.random.default_rng(seed)
    sos = carrier_sos(2000.0)
    zi = np.zeros((sos.shape[0], len(MODELS), 2))

    def source(n: int) -> np.ndarray:
        nonlocal zi
        out, zi = signal.sosfilt(sos, rng.standard_normal((len(MODELS), n)), axis=1, zi=zi)
        return np.asarray(out)

    return source


@pytest.mark.parametrize("variant", ["correct", "shared_stream"])
def test_any_split_into_calls_gives_the_same_signal(variant: str) -> None:
    def make() -> Callable[[int], np.ndarray]:
        if variant == "shared_stream":
            return shared_stream_source(3)
        return SyntheticEmg(2000.0, MODELS, PROFILE, mains_hz=50.0, mains_mv=0.01, seed=3)

    whole = make()(6000)
    split = make()
    parts = np.concatenate([split(n) for n in (1, 999, 17, 40, 4943)], axis=1)
    ok = bool(np.array_equal(whole, parts))
    assert ok is (variant == "correct")


def largest_pole(sos: np.ndarray) -> float:
    """The largest pole radius: 1 or more and the filter's output grows without bound."""
    _, poles, _ = signal.sos2zpk(sos)
    return float(np.max(np.abs(poles)))


@pytest.mark.parametrize("variant", ["correct", "unchecked_at_200_hz"])
def test_the_shape_is_stable_wherever_it_is_made(variant: str) -> None:
    """Every rate the checks let through gets a stable filter; the shape made unchecked at
    200 Hz (below 2 · 120 Hz, where the pre-warp turns negative) has a pole outside."""
    if variant == "correct":
        rates = [MIN_SHAPED_RATE_HZ, 300.0, 500.0, 1000.0, 2000.0, 10_000.0]
        radii = [largest_pole(carrier_sos(r)) for r in rates]
    else:
        radii = [largest_pole(muscle_shape_sos(200.0))]
    ok = all(r < 1.0 for r in radii)
    assert ok is (variant == "correct"), radii


@pytest.mark.parametrize("rate_hz", [200.0, 250.0, float("nan")])
def test_a_rate_too_slow_for_the_shape_is_refused_not_flattened(rate_hz: float) -> None:
    with pytest.raises(ValueError, match="too slow for the muscle's spectral shape"):
        SyntheticEmg(rate_hz, MODELS, PROFILE)
    assert largest_pole(carrier_sos(250.0, band_only=True)) < 1.0  # the flat band, if asked for
