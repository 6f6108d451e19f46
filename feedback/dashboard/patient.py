"""The patient view: one big bar with the target band, the phase word and a countdown.

Painted by hand (QPainter) so it stays legible across a room: the bar is green inside the band,
amber below, red above; the band itself is a green frame; the countdown is the largest text and
says what it counts ("rest 3 s"). Plain words only: push, hold, relax. Without a calibration no
band is drawn (it would rest on a made-up MVC) and the view says so.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from feedback.dashboard.feed import DashFrame
from feedback.outputs.effort import EffortTracker, effort_word, whole_seconds, zone_of

BAR_MAX_PCT = 100.0
SCALE_PCT = (0, 25, 50, 75, 100)  # the bar's scale: without it a half-full bar means nothing
GREEN, AMBER, RED = QColor("#2e9d44"), QColor("#e0a020"), QColor("#d0342c")
BACKGROUND, INK = QColor("#111418"), QColor("#f2f2f2")


def bar_colour(pct: float, band: tuple[float, float]) -> QColor:
    low, high = band
    return GREEN if low <= pct <= high else (AMBER if pct < low else RED)


WORK_WORDS = {"push": "PUSH", "hold": "HOLD", "ease": "EASE OFF", "relax": "RELAX"}


def phase_word(frame: DashFrame, held: bool = False) -> str:
    """`held`: this effort's rep is counted (an `EffortTracker` over the frames knows)."""
    if frame.phase == "work":
        timed = bool(frame.header.reps_total)
        pct = frame.pct_mvc.get(frame.header.target_channel, 0.0)
        zone = zone_of(pct, frame.band, frame.holding, calibrated=frame.header.calibrated)
        word = effort_word(zone, held=held, left_s=frame.phase_left_s, timed=timed)
        return WORK_WORDS[word]
    return {
        "ready": "GET READY",
        "rest": "RELAX",
        "done": "WELL DONE",
        "calibrating": "CALIBRATION",
    }.get(frame.phase, "")


def countdown_parts(frame: DashFrame) -> tuple[str, str]:
    """What the countdown counts and how long is left: (`rest`, `3 s`), (`time left`, `4 s`),
    (`starts in`, `2 s`); nothing in free practice, which has no clock to beat."""
    left = f"{whole_seconds(frame.phase_left_s)} s"
    if frame.phase == "ready":
        return "starts in", left
    if frame.phase == "rest":
        return "rest", left
    if frame.phase == "work" and frame.header.reps_total:
        return "time left", left
    return "", ""


def count_text(frame: DashFrame) -> str:
    h = frame.header
    if not h.reps_total:
        return "free practice"
    sets = f" · set {frame.set_no} of {h.sets}" if h.sets > 1 else ""
    return f"reps {frame.reps_done} of {h.reps_total}{sets}"


class PatientWindow(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("vm-feedback: patient")
        self.setMinimumSize(480, 640)
        self.frame: DashFrame | None = None
        self.effort = EffortTracker()

    def show_frame(self, frame: DashFrame) -> None:
        self.frame = frame
        self.effort.update(frame.phase, frame.phase_left_s, frame.reps_done)
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
        calibrated = f.header.calibrated
        if calibrated:
            p.fillRect(band, QColor(46, 157, 68, 70))
        fill = QRectF(bar.left(), y_of(pct), bar.width(), bar.bottom() - y_of(pct))
        p.fillRect(fill, bar_colour(pct, f.band) if calibrated else AMBER)
        if calibrated:
            p.setPen(QPen(GREEN, 6))
            p.drawRect(band)
        p.setPen(INK)
        p.setFont(QFont("Sans", max(8, int(h * 0.026))))
        for v in SCALE_PCT:
            y = y_of(v)
            p.drawLine(int(bar.left()) - 6, int(y), int(bar.left()), int(y))
            right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            p.drawText(QRectF(0, y - h * 0.025, bar.left() - 8, h * 0.05), right, f"{v}")
        under = QRectF(0, bar.bottom() + 2, bar.right() + bar.left(), h * 0.06)
        p.drawText(under, Qt.AlignmentFlag.AlignHCenter, "% of your max")
        text_x = w * 0.5
        p.setFont(QFont("Sans", max(12, int(h * 0.07)), QFont.Weight.Bold))
        p.drawText(
            QRectF(text_x, h * 0.08, w * 0.48, h * 0.12),
            Qt.AlignmentFlag.AlignLeft,
            phase_word(f, self.effort.held),
        )
        label, left = countdown_parts(f)
        p.setFont(QFont("Sans", max(10, int(h * 0.045))))
        p.drawText(QRectF(text_x, h * 0.22, w * 0.48, h * 0.06), Qt.AlignmentFlag.AlignLeft, label)
        p.setFont(QFont("Sans", max(16, int(h * 0.16)), QFont.Weight.Bold))
        p.drawText(QRectF(text_x, h * 0.28, w * 0.48, h * 0.22), Qt.AlignmentFlag.AlignLeft, left)
        p.setFont(QFont("Sans", max(10, int(h * 0.045))))
        p.drawText(
            QRectF(text_x, h * 0.55, w * 0.48, h * 0.1),
            Qt.AlignmentFlag.AlignLeft,
            count_text(f),
        )
        if not calibrated:
            p.setFont(QFont("Sans", max(9, int(h * 0.032))))
            p.drawText(
                QRectF(text_x, h * 0.74, w * 0.48, h * 0.18),
                Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap,
                "uncalibrated: no target until you are calibrated",
            )
        if f.phase == "work" and f.header.reps_total and calibrated:
            hold = QRectF(text_x, h * 0.68, w * 0.4, h * 0.05)
            p.setFont(QFont("Sans", max(9, int(h * 0.032))))
            held = self.effort.held  # a held rep stays full until the rest, however the level falls
            p.drawText(QRectF(text_x, h * 0.63, w * 0.48, h * 0.05), Qt.AlignmentFlag.AlignLeft,
                       "hold: done" if held else "hold")  # fmt: skip
            p.fillRect(hold, QColor("#2a2f36"))
            done = 1.0 if held else f.hold_progress
            p.fillRect(QRectF(hold.left(), hold.top(), hold.width() * done, hold.height()), GREEN)
        p.end()
