"""Processing steps called directly with seeded data: no I/O (Timeflux style)."""

from __future__ import annotations

import numpy as np
import pytest

from config.loader import load_settings
from devices.base import SampleBlock
from feedback.processing.activation import BandDetector, Zone, hysteresis
from feedback.processing.chain import EmgChain

RATE = 2000.0
CHANNELS = ("VM", "VL")


def blocks_of(data: np.ndarray, sizes: list[int]) -> list[SampleBlock]:
    out, start = [], 0
    for n in sizes:
        out.append(SampleBlock(start, start / RATE, RATE, CHANNELS, data[:, start : start + n]))
        start += n
    assert start == data.shape[1]
    return out


def random_split(n: int, rng: np.random.Generator) -> list[int]:
    sizes = []
    while n:
        k = int(min(n, rng.integers(1, 60)))
        sizes.append(k)
        n -= k
    return sizes


def burst_signal(seed: int = 3, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    drive = np.where((t > 1.0) & (t < 2.0), 0.5, 0.01)
    return (rng.standard_normal((2, n)) * drive).astype(np.float32)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"processing.envelope": "lowpass"},
        {"processing.notch_hz": 50},
        {"processing.rms_window_ms": 50, "processing.highpass_hz": 10},
    ],
)
def test_one_block_equals_many_blocks(overrides: dict[str, object]) -> None:
    s = load_settings(environ={}, overrides=overrides)
    data = burst_signal()
    whole = EmgChain(s.processing, s.calibration, RATE, CHANNELS).process(
        blocks_of(data, [data.shape[1]])[0]
    )
    chain = EmgChain(s.processing, s.calibration, RATE, CHANNELS)
    parts = [
        chain.process(b)
        for b in blocks_of(data, random_split(data.shape[1], np.random.default_rng(7)))
    ]
    for field in ("filtered", "envelope", "pct_mvc"):
        joined = np.concatenate([getattr(p, field) for p in parts], axis=1)
        np.testing.assert_allclose(joined, getattr(whole, field), rtol=1e-9, atol=1e-12)


def test_rms_envelope_reads_the_rms_of_a_steady_burst() -> None:
    s = load_settings(environ={})
    rng = np.random.default_rng(0)
    # Band-limited content well inside 20–450 Hz, RMS 0.25 mV = 50 % of the default MVC.
    t = np.arange(8000) / RATE
    x = 0.25 * np.sqrt(2) * np.sin(2 * np.pi * 120 * t + rng.uniform(0, 6))
    data = np.vstack([x, x]).astype(np.float32)
    out = EmgChain(s.processing, s.calibration, RATE, CHANNELS).process(
        blocks_of(data, [data.shape[1]])[0]
    )
    assert out.envelope[0, -1000:].mean() == pytest.approx(0.25, rel=0.03)
    assert out.pct_mvc[0, -1000:].mean() == pytest.approx(50.0, rel=0.03)


def test_group_delay_is_reported_per_envelope_choice() -> None:
    rms = EmgChain(*_parts({}), RATE, CHANNELS).group_delay_ms
    # 100 ms moving RMS delays ~50 ms; the band-pass adds a few ms at 100 Hz.
    assert 50.0 < rms < 60.0
    lp = EmgChain(*_parts({"processing.envelope": "lowpass"}), RATE, CHANNELS).group_delay_ms
    assert 25.0 < lp < 80.0
    short = EmgChain(*_parts({"processing.rms_window_ms": 40}), RATE, CHANNELS).group_delay_ms
    assert short < rms - 25.0


def _parts(overrides: dict[str, object]) -> tuple[object, object]:
    s = load_settings(environ={}, overrides=overrides)
    return s.processing, s.calibration  # type: ignore[return-value]


def test_hysteresis_is_exact_across_blocks() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.standard_normal(5000))
    whole, _ = hysteresis(x, 2.0, -2.0, False)
    state, parts = False, []
    for chunk in np.array_split(x, 97):
        out, state = hysteresis(chunk, 2.0, -2.0, state)
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # Between the thresholds the output keeps the last decision.
    assert hysteresis(np.array([0.0]), 2.0, -2.0, True)[0][0]
    assert not hysteresis(np.array([0.0]), 2.0, -2.0, False)[0][0]


def test_band_detector_does_not_flicker_at_an_edge() -> None:
    det = BandDetector(30.0, 60.0, 3.0)
    # Noise of ±2 % around the lower edge after entering: stays in band (hysteresis 3 %).
    pct = np.r_[np.full(10, 20.0), np.full(10, 31.0), 30.0 + np.tile([-2.0, 2.0], 50)]
    zone = det.process(pct)
    assert (zone[:10] == Zone.BELOW).all()
    assert (zone[10:] == Zone.IN_BAND).all()
    zone = det.process(np.array([64.0, 61.0, 59.0, 26.0]))
    assert list(zone) == [Zone.ABOVE, Zone.ABOVE, Zone.IN_BAND, Zone.BELOW]
