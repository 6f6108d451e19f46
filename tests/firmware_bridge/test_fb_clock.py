"""ClockMapper: drift and offset through jitter, from seeded simulations."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.clock import ClockMapper

LATENCY_S = 0.004  # the fixed part of transport delay: unobservable, so it is part of the map


def simulate(
    mapper: ClockMapper,
    *,
    drift_ppm: float,
    seconds: float,
    host_start: float,
    jitter_mean_s: float = 0.003,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames every 10 ms; arrival = true host time + latency + exponential jitter + stalls."""
    rng = np.random.default_rng(seed)
    device_us = np.arange(0, int(seconds * 1e6), 10_000) + 123_456_789
    true_host = host_start + (device_us - device_us[0]) * 1e-6 * (1 + drift_ppm * 1e-6)
    jitter = rng.exponential(jitter_mean_s, device_us.size)
    jitter[rng.random(device_us.size) < 0.01] += 0.080  # occasional OS or radio stall
    for d, h in zip(device_us, true_host + LATENCY_S + jitter, strict=True):
        mapper.update(int(d), float(h))
    return device_us, true_host


@pytest.mark.parametrize("drift_ppm", [100.0, -100.0, 0.0])
@pytest.mark.parametrize("host_start", [12_345.0, 1.7e9])  # monotonic-like and wall-clock-like
def test_recovers_drift_and_maps_within_a_millisecond(drift_ppm: float, host_start: float) -> None:
    mapper = ClockMapper()
    device_us, true_host = simulate(mapper, drift_ppm=drift_ppm, seconds=120, host_start=host_start)
    assert mapper.drift_ppm == pytest.approx(drift_ppm, abs=3.0)
    # Mapping error over the last window, and a little extrapolated into the future.
    for d, h in list(zip(device_us, true_host, strict=True))[-6000::250]:
        assert abs(mapper.to_host(int(d)) - (h + LATENCY_S)) < 1e-3
    future_us = int(device_us[-1]) + 2_000_000
    future_host = true_host[-1] + 2.0 * (1 + drift_ppm * 1e-6) + LATENCY_S
    assert abs(mapper.to_host(future_us) - future_host) < 1e-3


def test_offset_is_host_minus_device_at_the_newest_point() -> None:
    mapper = ClockMapper()
    device_us, true_host = simulate(mapper, drift_ppm=50.0, seconds=30, host_start=500.0)
    expected = true_host[-1] + LATENCY_S - device_us[-1] * 1e-6
    assert mapper.offset_s == pytest.approx(expected, abs=1e-3)


def test_early_estimate_is_usable_from_the_first_frames() -> None:
    mapper = ClockMapper()
    mapper.update(1_000_000, 10.050)
    assert mapper.drift_ppm == 0.0
    assert mapper.to_host(1_000_000) == pytest.approx(10.050)
    mapper.update(1_010_000, 10.058)  # arrived sooner than the first: lower envelope wins
    assert mapper.to_host(1_010_000) == pytest.approx(10.058)
    assert mapper.to_host(1_000_000) == pytest.approx(10.048)


def test_device_clock_going_back_means_reboot_and_restarts_the_estimate() -> None:
    mapper = ClockMapper()
    simulate(mapper, drift_ppm=100.0, seconds=20, host_start=100.0)
    mapper.update(5_000, 200.0)
    assert mapper.updates == 1
    assert mapper.to_host(5_000) == pytest.approx(200.0)


def test_to_host_before_any_update_is_an_error() -> None:
    with pytest.raises(ValueError):
        ClockMapper().to_host(0)
    assert ClockMapper().offset_s == 0.0


class _RefitEveryTime(ClockMapper):
    """The reference: a fresh least-squares fit at every mapping, as before the fit was kept."""

    def _line(self) -> tuple[float, float]:
        return self._fit_lower_envelope()


class _NeverRefitOnNewPoint(ClockMapper):
    """A wrong cache: keeps the first fit until a segment is added, even while the fit still
    includes the newest segment (the first two segments)."""

    def update(self, device_time_us: int, host_time_s: float) -> None:
        fit, segments = self._fit, len(self._segments)
        super().update(device_time_us, host_time_s)
        if len(self._segments) == segments and self._ref_device_us is not None:
            self._fit = fit


def _mappings(mapper: ClockMapper, seed: int) -> list[float]:
    """Every frame's mapped time over 100 s of jittered arrivals with a device restart."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    for start_us in (5_000_000, 1_000):  # the second run: the device clock went back
        for i in range(5000):
            device_us = start_us + i * 10_000
            mapper.update(device_us, 1.7e9 + i * 0.01 + rng.exponential(0.003))
            out.append(mapper.to_host(device_us))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_kept_fit_maps_exactly_as_a_fresh_fit_would(seed: int) -> None:
    assert _mappings(ClockMapper(), seed) == _mappings(_RefitEveryTime(), seed)


def test_the_comparison_catches_a_fit_kept_too_long() -> None:
    # Control: a cache that misses the newest segment's lower points maps differently.
    assert _mappings(_NeverRefitOnNewPoint(), 0) != _mappings(_RefitEveryTime(), 0)
