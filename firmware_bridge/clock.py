"""Device clock to host clock: offset and drift from arrival times, robust to transport jitter.

Each SampleFrame carries the device clock of its first sample; the host notes when the frame
arrived. Arrival = true time + transport delay, and the delay is never negative, so the *lower
envelope* of (host - device) over time is the clock relation plus the minimum latency, while
everything above it is jitter (USB polling, BLE connection intervals, OS scheduling).

So, like LSL's and NTP-style estimators: cut a sliding window of device time into segments, keep
the minimum of (host - device) in each, and fit a straight line through those minima by least
squares. The slope is the drift, the line at the newest device time is the offset. Keeping only
one point per segment makes an update O(1) and the fit O(segments), cheap enough per frame.

The constant part of the transport latency cannot be observed from one-way timestamps; mapped
times include the *minimum* latency. Subtract it if you have measured it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["ClockMapper"]


@dataclass(slots=True)
class _Segment:
    index: int  # floor(device seconds / segment length)
    x: float  # device seconds (since reference) of the lowest point
    y: float  # (host - device) seconds (relative to reference) at that point


class ClockMapper:
    """Maps device microseconds to host seconds (whatever host clock the caller passes in)."""

    def __init__(self, window_s: float = 60.0, n_segments: int = 20) -> None:
        if window_s <= 0 or n_segments < 2:
            raise ValueError("window_s must be > 0 and n_segments >= 2")
        self.window_s = window_s
        self._segment_s = window_s / n_segments
        self._segments: deque[_Segment] = deque()
        # References keep the arithmetic in small numbers: host wall time is ~1.7e9 s, and
        # float64 differences of such values would eat the microseconds we care about.
        self._ref_device_us: int | None = None
        self._ref_host_s = 0.0
        self._last_device_us = 0
        self._fit: tuple[float, float] | None = None  # (intercept, slope); None = stale
        self.updates = 0

    def reset(self) -> None:
        """Forget everything (device rebooted or host clock stepped)."""
        self._segments.clear()
        self._ref_device_us = None
        self._fit = None
        self.updates = 0

    def update(self, device_time_us: int, host_time_s: float) -> None:
        """Record that something stamped `device_time_us` arrived at `host_time_s`."""
        if self._ref_device_us is None or device_time_us < self._last_device_us:
            # First point, or the device clock went backwards: it restarted, start afresh.
            self.reset()
            self._ref_device_us = device_time_us
            self._ref_host_s = host_time_s
        self._last_device_us = device_time_us
        self.updates += 1
        x = (device_time_us - self._ref_device_us) * 1e-6
        y = (host_time_s - self._ref_host_s) - x
        index = int(x // self._segment_s)
        segments = self._segments
        last = segments[-1] if segments else None
        if last is not None and last.index == index:
            # A lower point in the newest segment: the fit changes only while it includes the
            # newest segment (two segments or fewer). Otherwise the fit, once made, stands
            # until a segment is added, so a frame's mapping is not a fresh least-squares fit
            # (half of a block's decode time when it was).
            if y < last.y:
                last.x, last.y = x, y
                if len(segments) <= 2:
                    self._fit = None
        else:
            segments.append(_Segment(index, x, y))
            self._fit = None
        oldest_kept = index - int(self.window_s / self._segment_s)
        while segments[0].index < oldest_kept:
            segments.popleft()  # (only ever after an append, which made the fit stale)

    def to_host(self, device_time_us: int) -> float:
        """Host time at which the device's clock read `device_time_us`."""
        if self._ref_device_us is None:
            raise ValueError("ClockMapper.to_host() before any update()")
        intercept, slope = self._line()
        x = (device_time_us - self._ref_device_us) * 1e-6
        return self._ref_host_s + x + intercept + slope * x

    @property
    def offset_s(self) -> float:
        """host - device time (s) at the newest device time seen."""
        if self._ref_device_us is None:
            return 0.0
        return self.to_host(self._last_device_us) - self._last_device_us * 1e-6

    @property
    def drift_ppm(self) -> float:
        """(host seconds per device second - 1) x 1e6: positive when the device clock runs slow."""
        return self._line()[1] * 1e6 if self._segments else 0.0

    def _line(self) -> tuple[float, float]:
        if self._fit is None:
            self._fit = self._fit_lower_envelope()
        return self._fit

    def _fit_lower_envelope(self) -> tuple[float, float]:
        points = list(self._segments)
        if len(points) > 2:
            # The newest segment is still filling: its minimum is biased upwards by jitter,
            # so leave it out once there is enough else to fit.
            points = points[:-1]
        if len(points) < 2:
            return min(p.y for p in points), 0.0
        n = len(points)
        mean_x = sum(p.x for p in points) / n
        mean_y = sum(p.y for p in points) / n
        sxx = sum((p.x - mean_x) ** 2 for p in points)
        sxy = sum((p.x - mean_x) * (p.y - mean_y) for p in points)
        slope = sxy / sxx if sxx > 0 else 0.0
        return mean_y - slope * mean_x, slope
