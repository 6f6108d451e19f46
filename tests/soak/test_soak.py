"""Soak tests (issue 9): the dashboard, a long session and the clinic logger run as long as they
do in use, and memory and frame rate at the end are checked against the start.

`make soak` runs the full lengths (marked `soak`, left out of `make test`); the short versions
below run in `make test` and CI (marked `slow`: about 2.5 minutes together). Results are written
to bench/results/soak-*.json (see bench/soak.py).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench.soak import soak_dashboard, soak_logger, soak_session
from tests.conftest import missing_service, mosquitto_binary

MB = 1024  # kB


def check_dashboard(r: dict[str, Any], seconds: float, max_growth_kb: float) -> None:
    assert r["exit_code"] == 0, r["errors"]
    assert r["children"]["dashboard"]["died"] == 0, r["children"]
    assert r["screenshot_written"]
    # The binding that crashed (PySide6 6.12.0 on Python 3.11) died near 210 frames; a minute
    # at 15 frames a second or more is over four times that (30 is asked for; 28 seen here).
    assert r["frames_drawn"] >= 15 * seconds, r["frame_rate"]
    fps = r["frame_rate"]
    assert fps["last_third_fps"] >= 0.6 * fps["first_third_fps"], fps  # steady, not decaying
    mem = r["dashboard_memory"]
    assert mem["end_kb"] - mem["after_warmup_kb"] < max_growth_kb, mem
    station = r["station_memory"]
    assert station["end_kb"] - station["after_warmup_kb"] < max_growth_kb, station


def check_session(r: dict[str, Any], signal_s: float, max_growth_kb: float) -> None:
    assert r["exit_code"] == 0, r["stderr_tail"]
    assert r["blocks"] == round(signal_s * 100)  # 20-sample blocks at 2 kHz
    assert all(c["died"] == 0 for c in r["children"].values()), r["children"]
    mem = r["station_memory"]
    assert mem["end_kb"] - mem["after_warmup_kb"] < max_growth_kb, mem


def check_logger(r: dict[str, Any], max_growth_kb: float) -> None:
    published = r["published"]
    assert r["received"] == published["qos1"] + published["qos0"]  # nothing dropped: it kept up
    assert r["stored_messages"] == published["qos1"]
    assert r["db_errors"] == 0 and r["dropped_qos0"] == 0
    assert r["queue_last_third_mean"] < 50, r  # not growing: the database keeps up
    mem = r["logger_memory"]
    assert mem["end_kb"] - mem["after_warmup_kb"] < max_growth_kb, mem


def need_mosquitto() -> None:
    if mosquitto_binary() is None:
        missing_service("mosquitto not installed (apt-get install mosquitto)")


# -- short versions: make test and CI -----------------------------------------------------------


@pytest.mark.slow
def test_dashboard_draws_a_live_session_for_a_minute() -> None:
    r = soak_dashboard(60.0, name="dashboard-short")
    check_dashboard(r, 60.0, max_growth_kb=30 * MB)


@pytest.mark.slow
def test_session_at_full_speed_keeps_its_memory() -> None:
    r = soak_session(300.0, name="session-short")
    check_session(r, 300.0, max_growth_kb=8 * MB)


@pytest.mark.slow
def test_logger_under_steady_load_keeps_up_and_its_memory() -> None:
    need_mosquitto()
    r = soak_logger(30.0, name="logger-short")
    check_logger(r, max_growth_kb=15 * MB)


# -- full length: make soak ---------------------------------------------------------------------

MINUTES = float(os.environ.get("VMF_SOAK_MINUTES", "10"))
HOURS = float(os.environ.get("VMF_SOAK_HOURS", "4"))


@pytest.mark.soak
def test_soak_dashboard_ten_minutes() -> None:
    seconds = MINUTES * 60
    r = soak_dashboard(seconds)
    check_dashboard(r, seconds, max_growth_kb=30 * MB)
    assert r["dashboard_memory"]["growth_kb_per_hour"] < 30 * MB


@pytest.mark.soak
def test_soak_four_hour_session_at_full_speed() -> None:
    r = soak_session(HOURS * 3600)
    check_session(r, HOURS * 3600, max_growth_kb=10 * MB)
    # The per-block list alone grew 11.5 MB per hour of signal (360k floats); 4 h measured 0.97.
    assert r["growth_kb_per_signal_hour"] < 2 * MB


@pytest.mark.soak
def test_soak_logger_ten_minutes() -> None:
    need_mosquitto()
    r = soak_logger(MINUTES * 60)
    check_logger(r, max_growth_kb=15 * MB)
    assert r["logger_memory"]["growth_kb_per_hour"] < 20 * MB
