"""The therapist window: per-channel EMG and envelope over a scrolling 10 s window, metrics, the
rep table, link/quality/stimulation indicators, and the controls (incl. the emergency stop).

It only draws what `DashFrame`s say and emits `Control`s through `on_control`; it never touches
the session, so it can run in another process.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from feedback.dashboard.controls import (
    Calibrate,
    Control,
    EmergencyStopRequest,
    PickProtocol,
    RearmRequest,
    SetBand,
    StartStop,
)
from feedback.dashboard.feed import DashFrame

# Every header says its unit; counts say "no." so no column is a bare number of unknown kind.
# Two lines each: one line was cut to "ded at (s" in the narrow side column.
REP_COLUMNS = ("rep\n(no.)", "set\n(no.)", "ended\n(s)", "to band\n(s)", "peak\n(% MVC)",
               "VM:VL\n(ratio)")  # fmt: skip
# The stimulation trigger is drawn only while stimulation can actually fire.
STIM_LIVE = ("armed", "stimulating")
STIM_COLOURS = {"off": "#888", "armed": "#2e9d44", "stimulating": "#e0a020", "estop": "#d0342c"}


def _mv(pct: float, mvc_mv: float) -> float:
    return pct / 100.0 * mvc_mv


class ChannelPlot(pg.PlotWidget):  # type: ignore[misc]
    def __init__(self, role: str, target: bool) -> None:
        super().__init__(background="w")
        self.role = role
        self.setLabel("left", f"{role} (mV)")
        self.getAxis("left").enableAutoSIPrefix(False)
        self.showGrid(x=True, y=True, alpha=0.2)
        # Grid lines at major ticks only (a line a second across the 10 s window): the minor
        # levels' translucent lines took ~70 % of each frame's software rendering.
        for side in ("left", "bottom"):
            self.getAxis(side).setStyle(maxTickLevel=0)
        self.getAxis("bottom").setTickSpacing(major=1.0, minor=0.5)
        self.setMouseEnabled(x=False, y=True)
        self.legend = self.addLegend(offset=(-10, 5), labelTextSize="9pt")
        self.legend.setBrush(pg.mkBrush(255, 255, 255, 200))
        self.raw = self.plot(pen=pg.mkPen("#b0b0b0", width=1), name="EMG, band-passed (mV)")
        self.envelope = self.plot(pen=pg.mkPen("#1f5fbf", width=2), name="envelope (mV)")
        self.band = pg.LinearRegionItem(
            orientation="horizontal", movable=False, brush=pg.mkBrush(46, 157, 68, 50)
        )
        threshold_pen = pg.mkPen("#d0342c", width=1.5, style=Qt.PenStyle.DashLine)
        self.threshold = pg.InfiniteLine(angle=0, pen=threshold_pen)
        # Legend samples for the band and the trigger line (region and infinite-line items have
        # no legend sample of their own); their labels carry the current values.
        self.band_key = pg.PlotDataItem(pen=pg.mkPen(46, 157, 68, 140, width=10))
        self.threshold_key = pg.PlotDataItem(pen=threshold_pen)
        self.blank_key = pg.PlotDataItem(pen=pg.mkPen(224, 160, 32, 140, width=10))
        self.keys: dict[int, str | None] = {}
        # Blanked spans (stimulation on) are shaded regions, not a NaN-gapped or filled curve:
        # those take pyqtgraph's QByteArray path workaround, which crashed with PySide6 6.12
        # (pyqtgraph#3265, a refcount fix on both sides).
        self.blank_spans: list[pg.LinearRegionItem] = []
        self.target = target
        if target:
            self.addItem(self.band)
            self.addItem(self.threshold)
            self.band.setVisible(False)
            self.threshold.setVisible(False)
        self.setXRange(-10, 0, padding=0)

    def show_band(self, band_mv: tuple[float, float] | None, band_pct: tuple[float, float]) -> None:
        """The band in mV on this mV plot (converted with the channel's MVC); None: no band."""
        self.band.setVisible(band_mv is not None)
        label = None
        if band_mv is not None:
            self.band.setRegion(band_mv)
            label = (f"target band {band_pct[0]:.0f}–{band_pct[1]:.0f} % MVC"
                     f" = {band_mv[0]:.2f}–{band_mv[1]:.2f} mV")  # fmt: skip
        self._key(self.band_key, label)

    def show_threshold(self, level_mv: float | None) -> None:
        """The stimulation trigger level; None (stimulation off or no band): not drawn."""
        self.threshold.setVisible(level_mv is not None)
        label = None
        if level_mv is not None:
            self.threshold.setValue(level_mv)
            label = f"stimulation trigger {level_mv:.2f} mV"
        self._key(self.threshold_key, label)

    def _key(self, sample: pg.PlotDataItem, label: str | None) -> None:
        """Legend entry for `sample` reads `label` (None: no entry); relaid only on a change."""
        if self.keys.get(id(sample)) == label:
            return
        self.keys[id(sample)] = label
        self.legend.removeItem(sample)
        if label is not None:
            self.legend.addItem(sample, label)

    def draw(self, t: np.ndarray, raw: np.ndarray, env: np.ndarray, blanked: np.ndarray) -> None:
        self.raw.setData(t, raw)
        self.envelope.setData(t, env)
        spans = _runs(blanked)
        while len(self.blank_spans) < len(spans):
            region = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(224, 160, 32, 70))
            self.addItem(region)
            self.blank_spans.append(region)
        # The shaded spans need a name, or they read as a fault in the recording.
        self._key(self.blank_key, "blanked (stimulation artefact)" if spans else None)
        for i, region in enumerate(self.blank_spans):
            region.setVisible(i < len(spans))
            if i < len(spans):
                a, b = spans[i]
                region.setRegion((t[a], t[b - 1]))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


class TherapistWindow(QMainWindow):
    def __init__(self, on_control: Callable[[Control], None] = lambda c: None) -> None:
        super().__init__()
        self.setWindowTitle("vm-feedback: therapist")
        self.resize(1280, 860)
        self.on_control = on_control
        self.frames_drawn = 0
        self.plots: dict[str, ChannelPlot] = {}
        central = QWidget()
        self.setCentralWidget(central)
        outer = QHBoxLayout(central)
        self.plot_column = QVBoxLayout()
        outer.addLayout(self.plot_column, stretch=3)
        side = QVBoxLayout()
        outer.addLayout(side, stretch=1)
        self.title = QLabel("waiting for the session…")
        self.title.setStyleSheet("font-size: 15px; font-weight: bold")
        side.addWidget(self.title)
        side.addLayout(self._metrics())
        self.reps = QTableWidget(0, len(REP_COLUMNS))
        self.reps.setHorizontalHeaderLabels(list(REP_COLUMNS))
        self.reps.verticalHeader().setVisible(False)
        self.reps.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        side.addWidget(self.reps, stretch=1)
        side.addLayout(self._controls())

    # -- layout -----------------------------------------------------------------------------

    def _metrics(self) -> QGridLayout:
        grid = QGridLayout()
        self.labels: dict[str, QLabel] = {}
        names = ("% MVC", "VM:VL", "onset VL−VM", "phase", "reps", "band", "link", "quality",
                 "MQTT", "stimulation")  # fmt: skip
        for row, name in enumerate(names):
            grid.addWidget(QLabel(name), row, 0)
            value = QLabel("–")
            value.setStyleSheet("font-weight: bold")
            grid.addWidget(value, row, 1)
            self.labels[name] = value
        return grid

    def _controls(self) -> QVBoxLayout:
        box = QVBoxLayout()
        row = QHBoxLayout()
        self.start = QPushButton("Stop session")
        self.start.clicked.connect(lambda: self.on_control(StartStop(start=False)))
        self.calibrate = QPushButton("Calibrate")
        self.calibrate.clicked.connect(lambda: self.on_control(Calibrate()))
        row.addWidget(self.start)
        row.addWidget(self.calibrate)
        box.addLayout(row)
        self.protocol = QComboBox()
        self.protocol.activated.connect(
            lambda _: self.on_control(PickProtocol(self.protocol.currentText()))
        )
        box.addWidget(self.protocol)
        band = QHBoxLayout()
        self.low = QDoubleSpinBox(decimals=0, minimum=1, maximum=100, suffix=" %")
        self.high = QDoubleSpinBox(decimals=0, minimum=2, maximum=150, suffix=" %")
        apply = QPushButton("Set band")
        apply.clicked.connect(lambda: self.on_control(SetBand(self.low.value(), self.high.value())))
        for w in (QLabel("band"), self.low, self.high, apply):
            band.addWidget(w)
        box.addLayout(band)
        self.estop = QPushButton("EMERGENCY STOP  (Space)")
        self.estop.setMinimumHeight(64)
        self.estop.setStyleSheet(
            "background: #d0342c; color: white; font-size: 18px; font-weight: bold"
        )
        self.estop.clicked.connect(lambda: self.on_control(EmergencyStopRequest("dashboard")))
        # Application-wide: the key works in whichever dashboard window has the focus.
        for key in (Qt.Key.Key_Space, Qt.Key.Key_Escape):
            shortcut = QShortcut(QKeySequence(key), self, self.estop.click)
            shortcut.setContext(Qt.ShortcutContext.ApplicationShortcut)
        box.addWidget(self.estop)
        self.rearm = QPushButton("Re-arm stimulation")
        self.rearm.clicked.connect(lambda: self.on_control(RearmRequest("dashboard")))
        box.addWidget(self.rearm)
        return box

    # -- drawing ----------------------------------------------------------------------------

    def _ensure_plots(self, frame: DashFrame) -> None:
        h = frame.header
        if list(self.plots) == list(h.channels):
            return
        for role in h.channels:
            plot = ChannelPlot(role, role == h.target_channel)
            self.plots[role] = plot
            self.plot_column.addWidget(plot)
        self.plots[h.channels[-1]].setLabel("bottom", "time (s)")
        self.low.setValue(frame.band[0])
        self.high.setValue(frame.band[1])

    def _show_protocol(self, running: str, available: tuple[str, ...]) -> None:
        """The picker shows the running protocol, also one not in the list (e.g. "demo") and
        after a switch; setCurrentText alone silently keeps the first item for a missing name."""
        items = list(available)
        if running and running not in items:
            items.insert(0, running)
        current = [self.protocol.itemText(i) for i in range(self.protocol.count())]
        if current != items:
            self.protocol.clear()
            self.protocol.addItems(items)
        if self.protocol.currentText() != running:
            self.protocol.setCurrentIndex(self.protocol.findText(running))

    def show_frame(self, frame: DashFrame) -> None:
        self._ensure_plots(frame)
        self._show_protocol(frame.header.protocol, frame.header.protocols)
        h = frame.header
        n = frame.raw.shape[1]
        t = (np.arange(n) - n + 1) / frame.display_hz
        low, high = frame.band
        for i, role in enumerate(h.channels):
            plot = self.plots[role]
            plot.draw(t, frame.raw[i], frame.envelope[i], frame.blanked)
            if role == h.target_channel:
                mvc = h.mvc_mv.get(role)
                # Uncalibrated: the MVC is a placeholder, so a band in mV would be invented.
                known = h.calibrated and mvc is not None and mvc > 0
                band = (_mv(low, mvc), _mv(high, mvc)) if known and mvc else None
                plot.show_band(band, frame.band)
                live = band is not None and frame.stim_state in STIM_LIVE
                plot.show_threshold(_mv(h.trigger_fraction * low, mvc) if live and mvc else None)
        self._labels(frame)
        self._rep_table(frame)
        self.frames_drawn += 1

    def _labels(self, f: DashFrame) -> None:
        h = f.header
        self.title.setText(f"{h.patient} · {h.protocol} · t = {f.t_end_s:.1f} s")
        lab = self.labels
        pct = "  ".join(f"{k} {v:.0f}" for k, v in f.pct_mvc.items())
        lab["% MVC"].setText(pct if h.calibrated else f"{pct} (uncalibrated)")
        lab["VM:VL"].setText("–" if f.vm_vl_ratio is None else f"{f.vm_vl_ratio:.2f}")
        onset = f.onset_diff_ms
        lab["onset VL−VM"].setText("–" if onset is None else f"{onset:+.0f} ms")
        hold = f" hold {f.hold_progress * 100:.0f} %" if f.phase == "work" else ""
        lab["phase"].setText(f"{f.phase} {f.phase_left_s:.1f} s{hold}")
        reps = f"{f.reps_done}/{h.reps_total} (set {f.set_no}/{h.sets})"
        lab["reps"].setText(reps if h.reps_total else "— (free practice)")
        band = f"{f.band[0]:.0f}–{f.band[1]:.0f} % MVC"
        lab["band"].setText(band if h.calibrated else "— (uncalibrated: needs a calibration)")
        lab["link"].setText(f.link)
        lab["quality"].setText(f"gaps {f.gaps}, protocol errors {f.protocol_errors}")
        lab["MQTT"].setText(f.mqtt)
        stim = lab["stimulation"]
        bursts = f"{f.stim_bursts} burst" + ("" if f.stim_bursts == 1 else "s")
        stim.setText(f"{f.stim_state} ({bursts})")
        stim.setStyleSheet(f"font-weight: bold; color: {STIM_COLOURS.get(f.stim_state, '#000')}")
        ok = f.link == "up"
        lab["link"].setStyleSheet(f"font-weight: bold; color: {'#2e9d44' if ok else '#d0342c'}")

    def _rep_table(self, f: DashFrame) -> None:
        if self.reps.rowCount() == len(f.reps):
            return
        self.reps.setRowCount(len(f.reps))
        for r, row in enumerate(f.reps):
            cells = (
                str(row.rep),
                str(row.set_no),
                f"{row.at_s:.1f}",
                "–" if row.time_to_band_s is None else f"{row.time_to_band_s:.2f}",
                f"{row.peak_pct_mvc:.0f}",
                "–" if row.vm_vl_ratio is None else f"{row.vm_vl_ratio:.2f}",
            )
            for c, text in enumerate(cells):
                self.reps.setItem(r, c, QTableWidgetItem(text))
        self.reps.scrollToBottom()
