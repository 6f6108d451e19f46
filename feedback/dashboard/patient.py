"""The patient view: one big bar with the target band, the phase word and a countdown.

Painted by hand (QPainter) so it stays legible across a room: the bar is green inside the band,
amber below, red above; the band itself is a green frame; the countdown is the largest text.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from feedback.dashboard.feed import DashFrame

BAR_MAX_PCT = 100.0
GREEN, AMBER, RED = QColor("#2e9d44"), QColor("#e0a020"), QColor("#d0342c")
BACKGROUND, INK = QColor("#111418"), QColor("#f2f2f2")


def bar_colour(pct: float, band: tuple[float, float]) -> QColor:
    low, high = band
    return GREEN if low <= pct <= high else (AMBER if pct < low else RED)


def phase_word(frame: DashFrame) -> str:
    if frame.phase == "work":
        return "HOLD" if frame.holding else "PUSH"
    return {
        "ready": "GET READY",
        "rest": "REST",
        "done": "WELL DONE",
        "calibrating": "CALIBRATION",
    }.get(frame.phase, "")


class PatientWindow(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("vm-feedback: patient")
        self.setMinimumSize(480, 640)
        self.frame: DashFrame | None = None

    def show_frame(self, frame: DashFrame) -> None:
        self.frame = frame
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), BACKGROUND)
        f = self.frame
        if f is None:
            p.end()
            return
        w, h = self.width(), self.height()
        pct = f.pct_mvc.get(f.header.target_channel, 0.0)
        bar = QRectF(w * 0.12, h * 0.08, w * 0.3, h * 0.84)

        def y_of(v: float) -> float:
            return bar.bottom() - bar.height() * min(max(v, 0.0), BAR_MAX_PCT) / BAR_MAX_PCT

        p.fillRect(bar, QColor("#2a2f36"))
        low, high = f.band
        band = QRectF(bar.left(), y_of(high), bar.width(), y_of(low) - y_of(high))
        p.fillRect(band, QColor(46, 157, 68, 70))
        fill = QRectF(bar.left(), y_of(pct), bar.width(), bar.bottom() - y_of(pct))
        p.fillRect(fill, bar_colour(pct, f.band))
        p.setPen(QPen(GREEN, 6))
        p.drawRect(band)
        p.setPen(INK)
        text_x = w * 0.5
        p.setFont(QFont("Sans", max(12, int(h * 0.07)), QFont.Weight.Bold))
        p.drawText(
            QRectF(text_x, h * 0.08, w * 0.48, h * 0.12), Qt.AlignmentFlag.AlignLeft, phase_word(f)
        )
        p.setFont(QFont("Sans", max(16, int(h * 0.16)), QFont.Weight.Bold))
        p.drawText(
            QRectF(text_x, h * 0.25, w * 0.48, h * 0.25),
            Qt.AlignmentFlag.AlignLeft,
            f"{f.phase_left_s:.0f}",
        )
        p.setFont(QFont("Sans", max(10, int(h * 0.045))))
        total = f.header.reps_total
        sets = f" · set {f.set_no}/{f.header.sets}" if f.header.sets > 1 else ""
        p.drawText(
            QRectF(text_x, h * 0.55, w * 0.48, h * 0.1),
            Qt.AlignmentFlag.AlignLeft,
            f"reps {f.reps_done}/{total}{sets}",
        )
        if f.phase == "work":
            hold = QRectF(text_x, h * 0.68, w * 0.4, h * 0.05)
            p.fillRect(hold, QColor("#2a2f36"))
            p.fillRect(
                QRectF(hold.left(), hold.top(), hold.width() * f.hold_progress, hold.height()),
                GREEN,
            )
        p.end()
