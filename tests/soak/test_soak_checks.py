"""Negative controls for the soak checks: results that leak, slow down or fall behind fail them.

The soak runs take minutes; these feed the same checks with results as a leaking or decaying
implementation would give them, so a check that could never fail would be caught here.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from bench.soak import frame_rate, growth_kb_per_hour, memory_summary
from tests.soak.test_soak import MB, check_dashboard, check_logger, check_session


def series(seconds: int, start_kb: float, kb_per_s: float) -> tuple[list[float], list[float]]:
    t = [float(s) for s in range(seconds)]
    noise = np.random.default_rng(0).normal(0, 200, seconds)  # a few hundred kB of jitter
    return t, [start_kb + kb_per_s * s + n for s, n in zip(t, noise, strict=True)]


def test_growth_is_the_slope_after_the_warm_up() -> None:
    t, kb = series(600, 100_000, 0.0)
    kb[:60] = [50_000 + 800 * i for i in range(60)]  # start-up: not a leak
    assert abs(growth_kb_per_hour(t, kb)) < 500
    t, kb = series(600, 100_000, 4 * MB / 600)  # 4 MB per 10 minutes
    assert growth_kb_per_hour(t, kb) == pytest.approx(24 * MB, rel=0.05)


def good_session() -> dict[str, Any]:
    t, kb = series(300, 130_000, 0.0)
    return {"exit_code": 0, "stderr_tail": [], "blocks": 30_000, "children": {},
            "station_memory": memory_summary(t, kb)}  # fmt: skip


def test_session_check_passes_flat_and_fails_a_leak() -> None:
    check_session(good_session(), 300.0, max_growth_kb=8 * MB)
    leaking = good_session()
    t, kb = series(300, 130_000, 4 * MB / 60)  # the old per-block lists at speed=max, roughly
    leaking["station_memory"] = memory_summary(t, kb)
    with pytest.raises(AssertionError):
        check_session(leaking, 300.0, max_growth_kb=8 * MB)


def good_dashboard() -> dict[str, Any]:
    t, kb = series(60, 210_000, 0.0)
    frames = [(10.0 * i, 300 * i) for i in range(7)]
    mem = memory_summary(t, kb)
    return {"exit_code": 0, "errors": [], "children": {"dashboard": {"died": 0}},
            "screenshot_written": True, "frames_drawn": 1800, "frame_rate": frame_rate(frames),
            "dashboard_memory": mem, "station_memory": mem}  # fmt: skip


def test_dashboard_check_fails_a_crash_a_slowdown_and_a_leak() -> None:
    check_dashboard(good_dashboard(), 60.0, max_growth_kb=30 * MB)
    crashed = good_dashboard()
    crashed["children"]["dashboard"]["died"] = 1
    crashed["frames_drawn"] = 208
    decaying = good_dashboard()
    decaying["frame_rate"] = frame_rate([(10.0 * i, 300 * i - 22 * i * i) for i in range(7)])
    leaking = good_dashboard()
    t, kb = series(60, 210_000, 1 * MB)
    leaking["dashboard_memory"] = memory_summary(t, kb)
    for bad in (crashed, decaying, leaking):
        with pytest.raises(AssertionError):
            check_dashboard(bad, 60.0, max_growth_kb=30 * MB)


def test_logger_check_fails_a_growing_queue_and_lost_messages() -> None:
    t, kb = series(30, 130_000, 0.0)
    good = {"published": {"qos1": 3000, "qos0": 1500}, "received": 4500,
            "stored_messages": 3000, "db_errors": 0, "dropped_qos0": 0,
            "queue_last_third_mean": 0.2, "logger_memory": memory_summary(t, kb)}  # fmt: skip
    check_logger(good, max_growth_kb=15 * MB)
    behind = copy.deepcopy(good)
    behind["queue_last_third_mean"] = 2400.0
    lost = copy.deepcopy(good)
    lost["stored_messages"] = 2990
    for bad in (behind, lost):
        with pytest.raises(AssertionError):
            check_logger(bad, max_growth_kb=15 * MB)
