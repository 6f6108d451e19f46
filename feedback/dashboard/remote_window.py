"""Qt side of the remote dashboard: a station picker (overview table) beside one page per station,
each page the same `TherapistWindow` the local dashboard uses. Only an adapter: it reads frames
from the `RemoteModel` and hands controls to the `RemoteClient` with the page's station."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QMainWindow,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from feedback.dashboard.controls import Control
from feedback.dashboard.remote_model import RemoteModel
from feedback.dashboard.therapist import TherapistWindow

COLUMNS = ("station", "state", "phase", "% MVC", "reps", "stim", "dropped")
Submit = Callable[[str, Control], str]


class RemoteWindow(QMainWindow):
    def __init__(self, model: RemoteModel, submit: Submit, stations: Sequence[str] = ()) -> None:
        super().__init__()
        self.setWindowTitle(f"vm-feedback: clinic {model.clinic} (remote)")
        self.resize(1600, 880)
        self.model = model
        self.submit = submit
        self.pages: dict[str, TherapistWindow] = {}
        self._drawn: dict[str, int] = {}
        self._notes: dict[str, str] = {}
        central = QWidget()
        self.setCentralWidget(central)
        row = QHBoxLayout(central)
        self.picker = QTableWidget(0, len(COLUMNS))
        self.picker.setHorizontalHeaderLabels(list(COLUMNS))
        self.picker.verticalHeader().setVisible(False)
        header = self.picker.horizontalHeader()  # each column as wide as its header or cells
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the station id: the rest
        self.picker.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.picker.setMaximumWidth(470)
        self.picker.currentCellChanged.connect(lambda r, *_: self.select(r))
        row.addWidget(self.picker, stretch=1)
        self.stack = QStackedWidget()
        row.addWidget(self.stack, stretch=3)
        for station in stations:
            self._page(station)

    def _page(self, station: str) -> TherapistWindow:
        page = self.pages.get(station)
        if page is None:
            page = TherapistWindow(on_control=functools.partial(self._control, station))
            page.setWindowTitle(station)
            self.pages[station] = page
            self.stack.addWidget(page)
            self.picker.setRowCount(len(self.pages))
            if len(self.pages) == 1:
                self.select(0)
        return page

    def select(self, row: int) -> None:
        """Show one station; only its EMERGENCY STOP keys are live (the same key on several
        pages would be ambiguous, and Qt then fires none of them)."""
        names = list(self.pages)
        if not 0 <= row < len(names):
            return
        for i, page in enumerate(self.pages.values()):
            for shortcut in page.findChildren(QShortcut):
                shortcut.setEnabled(i == row)
        self.stack.setCurrentWidget(self.pages[names[row]])
        if self.picker.currentRow() != row:
            self.picker.selectRow(row)

    @property
    def current_station(self) -> str:
        return list(self.pages)[self.stack.currentIndex()]

    def _control(self, station: str, control: Control) -> None:
        self.statusBar().showMessage(f"{station}: {self.submit(station, control)}", 10_000)

    def refresh(self) -> int:
        """Draw every station whose model changed; returns how many pages were redrawn."""
        drawn = 0
        for station in list(self.model.stations):
            summary = self.model.summary(station)
            page = self._page(station)
            if summary["version"] == self._drawn.get(station):
                continue
            self._drawn[station] = summary["version"]
            self._overview(list(self.pages).index(station), summary)
            if summary["note"] and summary["note"] != self._notes.get(station):
                self._notes[station] = str(summary["note"])
                self.statusBar().showMessage(f"{station}: {summary['note']}", 30_000)
            frame = self.model.frame(station)
            if frame is not None:
                page.show_frame(frame)
                drawn += 1
        return drawn

    def _overview(self, row: int, s: dict[str, object]) -> None:
        pct = s["pct_mvc"]
        state = str(s["state"]).replace("in_session", "in session")
        cells = (s["station"], state, s["phase"], "–" if pct is None else f"{pct:.0f}",
                 s["reps"], s["stim"], s["dropped"])  # fmt: skip
        for col, value in enumerate(cells):
            self.picker.setItem(row, col, QTableWidgetItem(str(value)))


def run_window(
    model: RemoteModel,
    client: object,
    stations: Sequence[str],
    screenshot: str | None,
    seconds: float | None,
) -> int:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = QApplication([])
    submit: Submit = client.submit  # type: ignore[attr-defined]
    win = RemoteWindow(model, submit, stations)
    win.show()
    timer = QTimer()
    timer.timeout.connect(win.refresh)
    timer.start(33)

    def finish() -> None:
        if screenshot:
            win.grab().save(str(Path(screenshot)))
        app.quit()

    if seconds is not None:
        QTimer.singleShot(round(seconds * 1000), finish)
    app.exec()
    if screenshot and seconds is None:
        win.grab().save(str(Path(screenshot)))
    os._exit(0)  # as the local dashboard: skip Qt teardown (pyqtgraph/PySide6 at exit)
