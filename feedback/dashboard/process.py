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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from feedback.dashboard.controls import Control
from feedback.dashboard.feed import DashFrame
from feedback.supervision import describe_exit

log = logging.getLogger(__name__)


EXIT_BAD_BINDING = 3  # the Qt binding failed its self-check: restarting cannot help
STATUS_PERIOD_S = 1.0


@dataclass(frozen=True, slots=True)
class _Close:
    screenshot: str | None


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """From the child once a second: how much it drew and how big it is."""

    frames_drawn: int
    rss_kb: int


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """From the child just before it exits on purpose: why."""

    reason: str


def rss_kb(pid: int | str = "self") -> int:
    """Resident memory of a process in kB (Linux /proc; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChildMain(Protocol):
    def __call__(
        self, frames: Any, controls: Any, patient_view: bool, fps: float, offscreen: bool
    ) -> None: ...


def patient_screenshot_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-patient{path.suffix}")


class DashboardProcess:
    def __init__(
        self,
        *,
        screenshot: Path | None = None,
        patient_view: bool = True,
        fps: float = 30.0,
        entry: ChildMain | None = None,  # tests wrap the child's main (a picklable function)
    ) -> None:
        self.screenshot = screenshot
        self._args = (patient_view, fps)
        self._entry: ChildMain = entry or child_main
        self.offered = 0
        self.replaced = 0
        self.frames_drawn = 0  # as last reported by the child (since its last restart)
        self.frames_before = 0  # drawn by children that have since died
        self.rss_kb = 0
        self.peak_rss_kb = 0
        self.failure: str | None = None  # the child's own words when it gave up
        self.close_problem: str | None = None  # why close() wrote no screenshot
        self._pending: list[Control] = []  # controls read while collecting a dead child's status
        self._closing = False  # once set, offers stop: nothing may displace the close request
        self._make()

    def _make(self) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: Qt must not inherit a forked loop
        self._frames: Any = ctx.Queue(maxsize=1)
        self._controls: Any = ctx.Queue()
        offscreen = not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")
        self._proc = ctx.Process(
            target=self._entry,
            args=(self._frames, self._controls, *self._args, offscreen),
            name="vmf-dashboard",
            daemon=True,
        )

    def start(self) -> None:
        self._proc.start()

    def restart(self) -> None:
        """A new child with new queues (a dead child may have left the old ones locked)."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(2.0)
        self.frames_before += self.frames_drawn
        self.frames_drawn = 0
        self.failure = None
        for q in (self._frames, self._controls):
            q.close()
            q.cancel_join_thread()  # never wait on a pipe nobody reads any more
        self._make()
        self.start()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def exitcode(self) -> int | None:
        """None while running; negative: killed by that signal (-6 abort, -9 SIGKILL)."""
        return self._proc.exitcode

    @property
    def sentinel(self) -> int:
        """A file descriptor that becomes readable when the child ends."""
        return int(self._proc.sentinel)

    @property
    def closing(self) -> bool:
        """True once the station has asked it to close: its end is then no death."""
        return self._closing

    @property
    def permanent_failure(self) -> bool:
        """The child gave up for a reason a restart cannot change (the Qt binding check)."""
        return self._proc.exitcode == EXIT_BAD_BINDING

    @property
    def total_frames(self) -> int:
        return self.frames_before + self.frames_drawn

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

    def collect(self) -> None:
        """Read what the child sent (status, last words); controls wait for `controls()`."""
        self._pending.extend(self._read())

    def controls(self) -> list[Control]:
        """The therapist's controls since the last call; the child's status is kept aside."""
        out, self._pending = self._pending, []
        out.extend(self._read())
        return out

    def _read(self) -> list[Control]:
        out: list[Control] = []
        while True:
            try:
                item = self._controls.get_nowait()
            except (queue.Empty, OSError, EOFError, ValueError):  # a dead child's broken pipe
                return out
            if isinstance(item, ChildStatus):
                self.frames_drawn = item.frames_drawn
                self.rss_kb = item.rss_kb
                self.peak_rss_kb = max(self.peak_rss_kb, item.rss_kb)
            elif isinstance(item, ChildFailed):
                self.failure = item.reason
            else:
                out.append(item)

    def close(self, timeout_s: float = 15.0) -> bool:
        """Ask for the screenshots, wait for the child; True when the screenshot exists.
        When it does not (and one was asked for), `close_problem` says why."""
        self._closing = True
        if self._proc.is_alive():
            with_shot = None if self.screenshot is None else str(self.screenshot)
            with contextlib.suppress(queue.Empty):
                self._frames.get_nowait()
            self._frames.put(_Close(with_shot), timeout=timeout_s)
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                log.warning("dashboard did not close in %.0f s; terminating it", timeout_s)
                self.close_problem = f"the dashboard did not close within {timeout_s:.0f} s"
                self._proc.terminate()
                self._proc.join(2.0)
        else:
            self.close_problem = f"the dashboard was not running ({describe_exit(self.exitcode)})"
        self.collect()  # the child's last status (frames drawn); controls after the end are moot
        if self.screenshot is None:
            return False
        if self.screenshot.exists():
            self.close_problem = None
            return True
        if self.close_problem is None:
            self.close_problem = (
                f"the dashboard ended ({describe_exit(self.exitcode)}) without writing it"
            )
        return False


def child_main(frames: Any, controls: Any, patient_view: bool, fps: float, offscreen: bool) -> None:
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from feedback.dashboard.qt_check import binding_problem

    problem = None if os.environ.get("VMF_SKIP_QT_CHECK") == "1" else binding_problem()
    if problem is not None:
        print(f"dashboard: {problem}", file=sys.stderr, flush=True)
        controls.put(ChildFailed(problem))
        controls.close()
        controls.join_thread()  # the reason must reach the station before the process goes
        os._exit(EXIT_BAD_BINDING)

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

    next_status = time.monotonic()

    def pump() -> None:
        nonlocal next_status
        now = time.monotonic()
        if now >= next_status:
            next_status = now + STATUS_PERIOD_S
            controls.put(ChildStatus(therapist.frames_drawn, rss_kb()))
        try:
            item = frames.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, _Close):
            controls.put(ChildStatus(therapist.frames_drawn, rss_kb()))
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
    controls.close()
    controls.join_thread()  # the last status (frames drawn) reaches the station
    # Everything worth keeping is on disk; skip Qt's teardown, which can crash at interpreter
    # exit when pyqtgraph and PySide6 disagree on who deletes shared objects.
    os._exit(0)
