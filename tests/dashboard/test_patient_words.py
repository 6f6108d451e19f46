"""What the patient reads on the Qt patient view: plain words, a countdown that says what it
counts, and no band drawn against a made-up MVC (offscreen, real widgets)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from feedback.dashboard.feed import DashFrame, Header
from feedback.dashboard.patient import (
    GREEN,
    PatientWindow,
    count_text,
    countdown_parts,
    phase_word,
)

JARGON = ("MDF", "onset", "envelope", "RMS", "Hodges", "TKEO", "MVC")
OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "output"


def frame(phase: str, *, reps_total: int = 10, calibrated: bool = True, **kw: Any) -> DashFrame:
    header = Header(
        patient="P-0001", channels=("VM",), reps_total=reps_total, calibrated=calibrated
    )
    base = DashFrame(
        header=header, t_end_s=5.0, display_hz=200.0, raw=np.zeros((1, 10), np.float32),
        envelope=np.zeros((1, 10), np.float32), blanked=np.zeros(10, bool),
        pct_mvc={"VM": 45.0}, band=(30.0, 60.0), phase=phase, holding=False,
        hold_progress=0.5, phase_left_s=3.2, session_left_s=60.0, reps_done=2, set_no=1,
        vm_vl_ratio=None, onset_diff_ms=None, link="up", mqtt="up", gaps=0,
        protocol_errors=0, stim_state="off", stim_bursts=0, reps=(),
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


@pytest.mark.parametrize(
    ("phase", "word", "countdown"),
    [
        ("ready", "GET READY", ("starts in", "4 s")),  # 3.2 s left: the fourth second runs
        ("work", "HOLD", ("time left", "4 s")),  # 45 % is inside the 30–60 band
        ("rest", "RELAX", ("rest", "4 s")),
        ("done", "WELL DONE", ("", "")),
    ],
)
def test_plain_words_and_a_countdown_that_says_what_it_counts(
    phase: str, word: str, countdown: tuple[str, str]
) -> None:
    f = frame(phase)
    assert phase_word(f) == word
    assert countdown_parts(f) == countdown
    assert count_text(f) == "reps 2 of 10"
    shown = " ".join([phase_word(f), *countdown_parts(f), count_text(f)])
    assert not any(j.lower() in shown.lower() for j in JARGON)


def test_free_practice_has_no_clock_and_no_reps() -> None:
    f = frame("work", reps_total=0)
    assert countdown_parts(f) == ("", "")
    assert count_text(f) == "free practice"


def band_edge(view: PatientWindow) -> Any:
    """A pixel on the green frame drawn round the band (30–60 %), at the bar's middle."""
    img = view.grab().toImage()
    h = view.height()
    bar_bottom, bar_height = h * 0.92, h * 0.84
    y = bar_bottom - bar_height * 0.60
    return img.pixelColor(int(view.width() * 0.27), int(y))


@pytest.mark.parametrize("calibrated", [True, False])
def test_the_band_is_drawn_only_with_a_calibration(qtbot: QtBot, calibrated: bool) -> None:
    view = PatientWindow()
    qtbot.addWidget(view)
    view.resize(480, 640)
    view.show()
    view.show_frame(frame("work", calibrated=calibrated, pct_mvc={"VM": 10.0}))
    OUTPUT.mkdir(exist_ok=True)
    view.grab().save(str(OUTPUT / f"patient-{'calibrated' if calibrated else 'uncalibrated'}.png"))
    assert (band_edge(view) == GREEN) is calibrated


@pytest.mark.parametrize(("calibrated", "reps_total"), [(True, 10), (False, 0)])
def test_the_therapist_view_says_uncalibrated_and_shows_a_dash_for_reps_not_counted(
    qtbot: QtBot, calibrated: bool, reps_total: int
) -> None:
    from feedback.dashboard.therapist import TherapistWindow

    win = TherapistWindow()
    qtbot.addWidget(win)
    win.show_frame(frame("work", calibrated=calibrated, reps_total=reps_total))
    reps, band = win.labels["reps"].text(), win.labels["band"].text()
    pct = win.labels["% MVC"].text()
    if calibrated:
        assert reps.startswith("2/10") and band == "30–60 % MVC" and "uncalibrated" not in pct
    else:
        assert reps.startswith("—") and "0/0" not in reps
        assert "uncalibrated" in band and "uncalibrated" in pct


def old_phase_word(frame: DashFrame) -> str:
    """The rule before: PUSH whenever the exercise is not holding (held rep, or above the band)."""
    return "HOLD" if frame.holding else "PUSH"


def demo_effort() -> list[DashFrame]:
    """One effort as the demo's frames have it: in the band, the rep held 2.4 s before the end,
    then the patient easing off (18 %) with 0.15 s to go, then the rest."""
    frames = [frame("work", pct_mvc={"VM": 5.0}, phase_left_s=4.99, hold_progress=0.0)]
    for left in (4.4, 3.4, 2.6):
        frames.append(frame("work", holding=True, phase_left_s=left, hold_progress=0.5))
    for left in (2.39, 1.0, 0.4):  # the hold completed: one rep more
        held = {"holding": True, "hold_progress": 1.0, "reps_done": 3}
        frames.append(frame("work", phase_left_s=left, **held))
    frames.append(
        frame("work", pct_mvc={"VM": 18.0}, phase_left_s=0.15, hold_progress=0.0, reps_done=3)
    )
    frames.append(frame("rest", pct_mvc={"VM": 5.0}, phase_left_s=4.99, reps_done=3))
    return frames


@pytest.mark.parametrize("variant", ["correct", "old_rule"])
def test_no_push_once_the_rep_is_held(qtbot: QtBot, variant: str) -> None:
    view = PatientWindow()
    qtbot.addWidget(view)
    words = []
    for f in demo_effort():
        view.show_frame(f)
        words.append(phase_word(f, view.effort.held) if variant == "correct" else old_phase_word(f))
    held_from = next(i for i, f in enumerate(demo_effort()) if f.reps_done == 3)
    ok = "PUSH" not in words[held_from:] and words[0] == "PUSH"
    assert ok is (variant == "correct"), words


@pytest.mark.parametrize("variant", ["correct", "old_rule"])
def test_above_the_band_reads_ease_off(variant: str) -> None:
    f = frame("work", pct_mvc={"VM": 80.0})
    word = phase_word(f) if variant == "correct" else old_phase_word(f)
    assert (word == "EASE OFF") is (variant == "correct")


def test_a_held_rep_is_drawn_done_until_the_rest(qtbot: QtBot) -> None:
    """The eased-off frame after a held rep: RELAX, and the hold bar full (kept as a picture)."""
    view = PatientWindow()
    qtbot.addWidget(view)
    view.resize(480, 640)
    view.show()
    frames = demo_effort()
    for f in frames[:-1]:
        view.show_frame(f)
    assert view.effort.held and phase_word(frames[-2], view.effort.held) == "RELAX"
    OUTPUT.mkdir(exist_ok=True)
    img = view.grab().toImage()
    img.save(str(OUTPUT / "patient-held-relax.png"))
    h, w = view.height(), view.width()
    hold_bar_end = img.pixelColor(int(w * 0.5 + w * 0.4 - 3), int(h * 0.705))
    assert hold_bar_end == GREEN  # full, though the level has fallen
    view.show_frame(frames[-1])  # the rest: no hold bar, no held rep
    assert not view.effort.held
