"""The dashboard in its own process, so drawing can never delay processing.

The session process offers `DashFrame`s into a one-slot queue, latest wins: when the slot is
taken the stale frame is pulled back out and replaced, so `offer` never blocks and never grows
a backlog. Controls come back on a second queue that the session polls. At the end, `close` asks
the child to save screenshots (works with QT_QPA_PLATFORM=offscreen) and waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.dashboard.controls import Control
from feedback.dashboard.feed import DashFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Close:
    screenshot: str | None


def patient_screenshot_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-patient{path.suffix}")


class DashboardProcess:
    def __init__(
        self, *, screenshot: Path | None = None, patient_view: bool = True, fps: float = 30.0
    ) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: Qt must not inherit a forked loop
        self._frames: Any = ctx.Queue(maxsize=1)
        self._controls: Any = ctx.Queue()
        self.screenshot = screenshot
        offscreen = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
        self._proc = ctx.Process(
            target=_child_main,
            args=(self._frames, self._controls, patient_view, fps, offscreen),
            name="vmf-dashboard",
            daemon=True,
        )
        self.offered = 0
        self.replaced = 0
        self._closing = False  # once set, offers stop: nothing may displace the close request

    def start(self) -> None:
        self._proc.start()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def offer(self, frame: DashFrame) -> None:
        """Never blocks: replaces a frame the dashboard has not taken yet."""
        if self._closing:
            return
        self.offered += 1
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            try:
                self._frames.get_nowait()
                self.replaced += 1
            except queue.Empty:
                pass
            try:
                self._frames.put_nowait(frame)
            except queue.Full:
                self.replaced += 1  # the child is mid-take; the next offer will land

    def stop_offers(self) -> None:
        self._closing = True

    def controls(self) -> list[Control]:
        out: list[Control] = []
        while True:
            try:
                out.append(self._controls.get_nowait())
            except queue.Empty:
                return out

    def close(self, timeout_s: float = 15.0) -> bool:
        """Ask for the screenshots, wait for the child; True when the screenshot exists."""
        self._closing = True
        if self._proc.is_alive():
            with_shot = None if self.screenshot is None else str(self.screenshot)
            with contextlib.suppress(queue.Empty):
                self._frames.get_nowait()
            self._frames.put(_Close(with_shot), timeout=timeout_s)
            self._proc.join(timeout_s)
        if self._proc.is_alive():
            log.warning("dashboard did not close in %.0f s; terminating it", timeout_s)
            self._proc.terminate()
            self._proc.join(2.0)
        return self.screenshot is not None and self.screenshot.exists()


def _child_main(
    frames: Any, controls: Any, patient_view: bool, fps: float, offscreen: bool
) -> None:
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from feedback.dashboard.patient import PatientWindow
    from feedback.dashboard.therapist import TherapistWindow

    app = QApplication([])
    therapist = TherapistWindow(on_control=controls.put)
    therapist.show()
    patient = PatientWindow() if patient_view else None
    if patient is not None:
        screens = app.screens()
        if len(screens) > 1:  # the patient's screen: full screen on the second display
            patient.setGeometry(screens[1].geometry())
            patient.showFullScreen()
        else:
            patient.show()

    def pump() -> None:
        try:
            item = frames.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, _Close):
            if item.screenshot:
                path = Path(item.screenshot)
                therapist.grab().save(str(path))
                if patient is not None:
                    patient.grab().save(str(patient_screenshot_path(path)))
            app.quit()
            return
        therapist.show_frame(item)
        if patient is not None:
            patient.show_frame(item)

    timer = QTimer()
    timer.timeout.connect(pump)
    timer.start(max(1, round(1000 / fps)))
    app.exec()
    # Everything worth keeping is on disk; skip Qt's teardown, which can crash at interpreter
    # exit when pyqtgraph and PySide6 disagree on who deletes shared objects.
    os._exit(0)
