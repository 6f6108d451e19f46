"""The dashboard process draws for long (issue 9).

With PySide6-Essentials 6.12.0 on Python 3.11 the dashboard child aborted after about 225 frames
("none_dealloc: deallocating None"): the binding loses a reference to None on every Qt call that
returns None. These tests draw several times that many frames in a real child process, and check
the binding itself; the negative control makes a child lose None references the same way and
shows that the long-draw check catches its death.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import ctypes
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from feedback.dashboard.feed import DashFrame
from feedback.dashboard.process import DashboardProcess, child_main
from feedback.dashboard.qt_check import PROBE_CALLS, none_refs_lost
from tests.dashboard.test_dashboard import Recording

FRAMES = 1000  # the broken binding died near 210-225 frames; this is over four times that


def test_qt_binding_keeps_references_to_none() -> None:
    lost = none_refs_lost()
    assert lost < PROBE_CALLS // 2, (
        f"this PySide6 loses {lost} references to None in {PROBE_CALLS} calls: the dashboard "
        "would abort within seconds (see the pin in pyproject.toml)"
    )


def _frames() -> list[DashFrame]:
    rec = Recording()
    return [rec.run(s) for s in (2.0, 0.5, 0.5, 0.5)]  # different data, so every frame redraws


def draw(proc: DashboardProcess, frames: list[DashFrame], count: int, timeout_s: float) -> None:
    """Offer frames as fast as the child takes them until it has drawn `count` (or died)."""
    deadline = time.monotonic() + timeout_s
    i = 0
    while proc.frames_drawn < count and proc.alive and time.monotonic() < deadline:
        proc.offer(frames[i % len(frames)])
        proc.controls()  # reads the child's status: frames drawn, memory
        i += 1
        time.sleep(0.002)


@pytest.mark.soak  # in CI, tests/soak/test_soak.py draws a live session for a minute instead
def test_dashboard_process_draws_thousands_of_frames(tmp_path: Path) -> None:
    shot = tmp_path / "long.png"
    proc = DashboardProcess(screenshot=shot, fps=1000)  # the child takes a frame every 1 ms
    proc.start()
    draw(proc, _frames(), FRAMES, timeout_s=240.0)
    assert proc.alive, (
        f"the dashboard died after {proc.frames_drawn} frames "
        f"(exit {proc.exitcode}): {proc.failure or 'no reason given'}"
    )
    assert proc.frames_drawn >= FRAMES
    assert proc.close(timeout_s=30.0)
    assert proc.exitcode == 0 and shot.stat().st_size > 10_000


def losing_child_main(*args: Any) -> None:
    """The real child, with every drawn frame losing references to None as 6.12.0 did."""
    from feedback.dashboard.therapist import TherapistWindow

    show = TherapistWindow.show_frame

    def show_and_lose(self: TherapistWindow, frame: DashFrame) -> None:
        show(self, frame)
        for _ in range(400):
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(None))

    TherapistWindow.show_frame = show_and_lose  # type: ignore[method-assign]
    child_main(*args)


@pytest.mark.slow
def test_negative_control_a_binding_that_loses_none_is_caught(tmp_path: Path) -> None:
    proc = DashboardProcess(fps=1000, patient_view=False, entry=losing_child_main)
    proc.start()
    draw(proc, _frames(), FRAMES, timeout_s=120.0)
    proc._proc.join(10.0)
    assert not proc.alive and proc.exitcode == -signal.SIGABRT
    assert proc.frames_drawn < FRAMES
