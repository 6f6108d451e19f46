"""The therapist dashboard without puzzles (issue 14): the picker shows the running protocol, the
stimulation trigger line only while stimulation can fire, a legend, the band in the plot's unit
(mV, converted with the MVC) and none uncalibrated, units in every rep-table header."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses
import re

from pytestqt.qtbot import QtBot
from test_dashboard import Recording

from feedback.dashboard.feed import DashFrame
from feedback.dashboard.therapist import TherapistWindow


def window(qtbot: QtBot) -> TherapistWindow:
    win = TherapistWindow()
    qtbot.addWidget(win)
    win.show()
    return win


def with_header(frame: DashFrame, **changes: object) -> DashFrame:
    return dataclasses.replace(frame, header=dataclasses.replace(frame.header, **changes))


def legend_labels(win: TherapistWindow, role: str) -> list[str]:
    return [label.text for _, label in win.plots[role].legend.items]


def test_picker_shows_the_running_protocol_even_outside_the_list(qtbot: QtBot) -> None:
    win = window(qtbot)
    frame = Recording().run(1.0)
    win.show_frame(with_header(frame, protocol="demo", protocols=("mini-squat", "quad-sets")))
    assert win.protocol.currentText() == "demo"  # was "mini-squat", the first item
    win.show_frame(with_header(frame, protocol="quad-sets"))  # a switch mid-session
    assert win.protocol.currentText() == "quad-sets"  # was left at the first protocol shown
    assert [win.protocol.itemText(i) for i in range(win.protocol.count())][-2:] == [
        "mini-squat", "quad-sets"]  # fmt: skip


def test_no_trigger_line_while_stimulation_is_off(qtbot: QtBot) -> None:
    win = window(qtbot)
    frame = Recording().run(1.0)
    win.show_frame(frame)
    vm = win.plots["VM"]
    for state in ("off", "estop"):
        win.show_frame(dataclasses.replace(frame, stim_state=state))
        assert not vm.threshold.isVisible()  # was always drawn
        assert not any("trigger" in t for t in legend_labels(win, "VM"))
    win.show_frame(dataclasses.replace(frame, stim_state="armed"))
    assert vm.threshold.isVisible()  # negative control: drawn when it can fire
    assert round(vm.threshold.value(), 3) == 0.12  # 0.8 × 30 % of 0.5 mV
    assert "stimulation trigger 0.12 mV" in legend_labels(win, "VM")


def test_every_plot_has_a_legend_naming_its_curves_with_units(qtbot: QtBot) -> None:
    win = window(qtbot)
    win.show_frame(Recording().run(1.0))
    for role in ("VM", "VL"):
        labels = legend_labels(win, role)
        assert "EMG, band-passed (mV)" in labels and "envelope (mV)" in labels
    assert not any("band" in t and "target" in t for t in legend_labels(win, "VL"))


def test_band_is_drawn_in_mv_on_the_mv_plot_and_not_when_uncalibrated(qtbot: QtBot) -> None:
    win = window(qtbot)
    frame = Recording().run(1.0)  # MVC 0.5 mV, band 30–60 % MVC
    win.show_frame(frame)
    vm = win.plots["VM"]
    assert vm.band.isVisible()
    assert tuple(round(v, 3) for v in vm.band.getRegion()) == (0.15, 0.3)
    win.show_frame(with_header(frame, calibrated=False))
    assert not vm.band.isVisible()  # was drawn from the placeholder MVC
    assert not vm.threshold.isVisible()
    assert win.labels["band"].text().startswith("— (uncalibrated")
    assert not any("target band" in t for t in legend_labels(win, "VM"))
    win.show_frame(frame)  # calibrated again: the legend says both units
    assert "target band 30–60 % MVC = 0.15–0.30 mV" in legend_labels(win, "VM")


def test_every_rep_table_header_has_a_unit(qtbot: QtBot) -> None:
    win = window(qtbot)
    headers = [win.reps.horizontalHeaderItem(c).text() for c in range(win.reps.columnCount())]
    assert all(re.search(r"\n\((s|no\.|% MVC|ratio)\)$", h) for h in headers), headers
    assert not any(re.search(r"\d", h) for h in headers)


def test_blanked_spans_are_named_in_the_legend(qtbot: QtBot) -> None:
    win = window(qtbot)
    rec = Recording()
    win.show_frame(rec.run(1.0))
    assert not any("blanked" in t for t in legend_labels(win, "VM"))  # none yet: no entry
    rec.pipeline.blanker.add(round(1.2 * 2000), round(1.6 * 2000))
    win.show_frame(rec.run(1.0))
    assert "blanked (stimulation artefact)" in legend_labels(win, "VM")


def test_patient_bar_has_a_scale(qtbot: QtBot) -> None:
    from feedback.dashboard.patient import BACKGROUND, PatientWindow

    view = PatientWindow()
    qtbot.addWidget(view)
    view.resize(480, 640)
    view.show()
    view.show_frame(Recording().run(3.0))
    image = view.grab().toImage()
    margin = int(view.width() * 0.12) - 10  # left of the bar and its band frame: the scale
    inked = {
        y // 40 for y in range(view.height()) for x in range(margin)
        if image.pixelColor(x, y) != BACKGROUND
    }  # fmt: skip
    assert len(inked) >= 4  # was empty: the bar had no numbers beside it
