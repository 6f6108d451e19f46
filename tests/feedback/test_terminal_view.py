"""What the patient reads in the terminal view: plain words, a countdown that says what it
counts, "uncalibrated" where % MVC would rest on a made-up MVC, and "—" for reps not counted."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from feedback.outputs.terminal import ViewState, render
from feedback.processing.metrics import Contraction

JARGON = ("MDF", "onset", "envelope", "RMS", "Hodges", "group delay", "median freq")


def text(view: ViewState) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render(view))
    return out.getvalue()


def contraction(calibrated: bool) -> Contraction:
    return Contraction(
        1, "VM", 1000, 3000, 2.0, 55.0, 40.0, 0.3, 1.2, 0.2, 180.0, 25.0, 1.1,
        peak_mv=0.12, mean_mv=0.08, longest_hold_s=1.0, calibrated=calibrated,
    )  # fmt: skip


def view(**kw: object) -> ViewState:
    base = ViewState(
        patient="P-0001", protocol="demo", band=(30.0, 60.0), pct_mvc={"VM": 45.0, "VL": 40.0},
        envelope_mv={"VM": 0.083}, phase="work", reps_done=2, reps_total=10, phase_left_s=3.2,
        onset={"VM": True}, last_contraction=contraction(True), contractions=3,
    )  # fmt: skip
    for k, v in kw.items():
        setattr(base, k, v)
    return base


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"calibrated": False, "last_contraction": contraction(False)},
        {"free": True, "reps_done": None, "reps_total": 0},
        {"phase": "rest"},
    ],
)
def test_no_jargon_on_the_patients_screen(state: dict[str, object]) -> None:
    shown = text(view(**state))
    assert not [j for j in JARGON if j.lower() in shown.lower()]


def test_calibrated_work_shows_the_band_and_plain_instructions() -> None:
    shown = text(view())
    assert "HOLD" in shown and "45.0 % MVC" in shown and "30–60 % MVC" in shown
    assert "this effort: 4 s to go" in shown and "2 of 10 held" in shown  # 3.2 s: 4 begun
    assert "uncalibrated" not in shown
    assert "PUSH" in text(view(pct_mvc={"VM": 10.0}))
    assert "EASE OFF" in text(view(pct_mvc={"VM": 80.0}))


def test_uncalibrated_says_so_and_shows_no_band() -> None:
    shown = text(view(calibrated=False, last_contraction=contraction(False)))
    assert "0.083 mV (uncalibrated)" in shown and "0.120 mV (uncalibrated)" in shown
    assert "% MVC" not in shown and "after a calibration" in shown


def test_the_countdown_says_what_it_counts() -> None:
    assert "rest 4 s" in text(view(phase="rest")) and "RELAX" in text(view(phase="rest"))
    assert "starting in 4 s" in text(view(phase="ready"))
    assert "starting in" not in text(ViewState())  # before the first block nothing is known


def test_free_practice_shows_a_dash_for_reps_and_counts_contractions() -> None:
    shown = text(view(free=True, reps_done=None, reps_total=0, contracting=False))
    assert "—" in shown and "0 of" not in shown and "contractions" in shown
    assert "PUSH WHEN READY" in shown and "to go" not in shown
    assert "HOLD" in text(view(free=True, reps_done=None, contracting=True))
