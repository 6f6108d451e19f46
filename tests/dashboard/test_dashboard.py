"""Therapist and patient views, offscreen: widgets build, curves update, controls act.

Screenshots are written to tests/output/; with VMF_UPDATE_SCREENSHOTS=1 they are also copied
to docs/screenshots/ (committed).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from config.loader import load_settings
from devices.base import LinkStats
from devices.framed_stream import FramedSampleStream
from devices.simulator import build_firmware
from feedback.dashboard.controls import Control, EmergencyStopRequest, RearmRequest, SetBand
from feedback.dashboard.feed import DashboardFeed, DashFrame, Header
from feedback.dashboard.patient import AMBER, GREEN, PatientWindow
from feedback.dashboard.process import DashboardProcess, patient_screenshot_path
from feedback.dashboard.therapist import TherapistWindow
from feedback.pipeline import Pipeline
from feedback.rep_metrics import RepMetrics

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "tests" / "output"
DOCS = ROOT / "docs" / "screenshots"


def save(widget: Any, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    assert widget.grab().save(str(path))
    # The committed copies in docs/ change only on purpose: VMF_UPDATE_SCREENSHOTS=1 pytest ...
    if os.environ.get("VMF_UPDATE_SCREENSHOTS"):
        shutil.copyfile(path, DOCS / name)
    return path


class Recording:
    """The simulated amplifier through the real protocol decoder and pipeline, into a feed."""

    def __init__(self, channels: tuple[str, ...] = ("VM", "VL"), **overrides: Any) -> None:
        self.settings = load_settings(
            environ={}, overrides={"simulator.channels": list(channels), **overrides}
        )
        self.fw = build_firmware(self.settings.simulator)
        self.stream = FramedSampleStream(LinkStats())
        self.stream.feed(self.fw.hello(), 0.0)
        self.pipeline = Pipeline(self.settings, 2000.0, channels)
        header = Header(
            patient="P-0001",
            protocol="quad-sets",
            protocols=("mini-squat", "quad-sets"),
            channels=channels,
            mvc_mv={c: 0.5 for c in channels},
            reps_total=10,
            sets=1,
        )
        self.feed = DashboardFeed(header, 2000.0)
        self.reps = RepMetrics(channels, self.pipeline.target, 2000.0)  # as the session does
        self.t = 0.0

    def run(self, seconds: float) -> DashFrame:
        for _ in range(round(seconds * 100)):
            self.t += 0.01
            for block in self.stream.feed(self.fw.advance(20, self.t), self.t):
                tick = self.pipeline.process(block)
                self.feed.add(tick)
                for rep in self.reps.update(tick):
                    self.feed.add_rep(rep)
        frame = self.feed.frame(link="up", mqtt="up", stim_state="armed", stim_bursts=1)
        assert frame is not None
        return frame


def test_feed_keeps_ten_seconds_at_display_rate() -> None:
    rec = Recording()
    first = rec.run(3.0)
    assert first.raw.shape == (2, 600) and first.display_hz == 200.0
    frame = rec.run(9.0)
    assert frame.raw.shape == (2, 2000) and frame.envelope.shape == (2, 2000)
    assert abs(frame.t_end_s - 12.0) < 0.02
    assert frame.reps and frame.reps[0].rep == 1 and frame.reps[0].peak_pct_mvc > 30.0


def test_display_window_is_oldest_first_across_the_wrap_and_a_copy() -> None:
    """What the remote model draws comes from `display_window`, not from the feed's ring."""
    feed = DashboardFeed(Header(channels=("VM",)), 200.0)  # display rate = sample rate
    n = feed.size + 7  # wrapped: the ring's write position is 7
    ramp = np.arange(n, dtype=np.float32)[None, :]
    blank = ramp[0] % 2 == 0
    for start in range(0, n, 300):
        stop = min(start + 300, n)
        feed.write(ramp[:, start:stop], -ramp[:, start:stop], blank[start:stop])
    shown = feed.display_window()
    np.testing.assert_array_equal(shown.raw, ramp[:, -feed.size :])
    np.testing.assert_array_equal(shown.envelope, -ramp[:, -feed.size :])
    np.testing.assert_array_equal(shown.blanked, blank[-feed.size :])
    shown.raw[:] = 0  # the caller owns what it got
    assert feed.display_window().raw[0, -1] == n - 1


def test_therapist_window_builds_updates_and_screenshots(qtbot: QtBot) -> None:
    controls: list[Control] = []
    win = TherapistWindow(on_control=controls.append)
    qtbot.addWidget(win)
    win.show()
    rec = Recording()
    rec.pipeline.blanker.add(round(10.2 * 2000), round(11.4 * 2000))  # a burst's blanking
    frame = rec.run(6.0)
    win.show_frame(frame)
    _, env_before = win.plots["VM"].envelope.getData()
    frame = rec.run(6.0)
    win.show_frame(frame)
    x, env = win.plots["VM"].envelope.getData()
    assert len(env) == 2000 and x[-1] == 0.0 and x[0] < -9.9
    assert not np.array_equal(env[-len(env_before) :], env_before)  # the curve moved on
    assert win.reps.rowCount() == len(frame.reps) >= 1
    assert win.labels["band"].text() == "30–60 % MVC"
    assert win.labels["stimulation"].text() == "armed (1 burst)"
    assert "VM" in win.labels["% MVC"].text() and win.frames_drawn == 2
    low, high = win.plots["VM"].band.getRegion()
    assert (round(low, 3), round(high, 3)) == (0.15, 0.3)  # 30–60 % of 0.5 mV
    qtbot.waitUntil(lambda: win.plots["VL"].height() > 200, timeout=3000)  # laid out
    qtbot.wait(300)  # pyqtgraph finishes range and scene updates in the event loop
    path = save(win, "therapist.png")
    assert path.stat().st_size > 20_000


def test_therapist_controls_emit_commands(qtbot: QtBot) -> None:
    controls: list[Control] = []
    win = TherapistWindow(on_control=controls.append)
    qtbot.addWidget(win)
    win.show()
    win.show_frame(Recording().run(2.0))
    qtbot.mouseClick(win.estop, Qt.MouseButton.LeftButton)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=2000)
    qtbot.keyClick(win.reps, Qt.Key.Key_Space)  # focus anywhere in the window
    win.low.setValue(35)
    win.high.setValue(65)
    apply = next(b for b in win.findChildren(type(win.estop)) if b.text() == "Set band")
    qtbot.mouseClick(apply, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(win.rearm, Qt.MouseButton.LeftButton)
    assert controls == [
        EmergencyStopRequest("dashboard"),
        EmergencyStopRequest("dashboard"),
        SetBand(35.0, 65.0),
        RearmRequest("dashboard"),
    ]


def test_four_channels_build(qtbot: QtBot) -> None:
    win = TherapistWindow()
    qtbot.addWidget(win)
    win.show_frame(Recording(("VM", "VL", "VM_L", "VL_L")).run(1.0))
    assert list(win.plots) == ["VM", "VL", "VM_L", "VL_L"]


def pixel(widget: PatientWindow, fx: float, fy: float) -> Any:
    image = widget.grab().toImage()
    return image.pixelColor(int(widget.width() * fx), int(widget.height() * fy))


def test_patient_view_bar_is_green_in_band_and_amber_below(qtbot: QtBot) -> None:
    view = PatientWindow()
    qtbot.addWidget(view)
    view.resize(480, 640)
    view.show()
    rec = Recording()
    frame = rec.run(3.0)  # contracting at ~45 %: inside 30–60
    view.show_frame(frame)
    assert pixel(view, 0.27, 0.85) == GREEN
    save(view, "patient.png")
    low = dataclasses.replace(frame, pct_mvc={"VM": 15.0, "VL": 12.0})
    view.show_frame(low)
    assert pixel(view, 0.27, 0.88) == AMBER and pixel(view, 0.27, 0.5) != AMBER


def test_dashboard_process_latest_wins_and_screenshots(tmp_path: Path) -> None:
    shot = tmp_path / "dash.png"
    proc = DashboardProcess(screenshot=shot, fps=60)
    proc.start()
    rec = Recording()
    frame = rec.run(2.0)
    t0 = time.perf_counter()
    for _ in range(200):
        proc.offer(frame)  # far faster than the child can draw
    offer_s = time.perf_counter() - t0
    assert proc.replaced > 0  # stale frames were replaced, never queued
    assert offer_s < 5.0  # never blocked on the child (a loose sanity bound, not a benchmark)
    time.sleep(1.0)
    assert proc.alive
    assert proc.close(timeout_s=20.0)
    assert shot.stat().st_size > 10_000 and patient_screenshot_path(shot).exists()


@pytest.mark.slow
def test_cli_dashboard_screenshot_offscreen(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_feedback.py"), "--dashboard", "--screenshot",
         "view.png", "--duration", "3", "--db", "s.db", "--report", "r.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dashboard_screenshot"] == "view.png"
    assert (tmp_path / "view.png").stat().st_size > 10_000
    assert (tmp_path / "view-patient.png").exists()
