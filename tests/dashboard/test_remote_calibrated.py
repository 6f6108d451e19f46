"""A remote dashboard tells an uncalibrated session as the local one does: the stream sends MVC 0
(unknown) without a calibration, and the therapist's % MVC then reads "(uncalibrated)"."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from feedback.dashboard.remote_model import RemoteModel
from feedback.dashboard.therapist import TherapistWindow
from feedback.outputs.stream import StreamPacket, encode

CLINIC = "clinic-demo"


def packet(mvc_mv: tuple[float, float]) -> bytes:
    p = StreamPacket(
        counter=1, first_index=0, rate_hz=1000.0, decimation=10, t_sample=0.0, session="s-1",
        channels=("VM", "VL"), target=0, protocol="hold", patient="P-01",
        band=(30.0, 60.0), phase="work", holding=False, link_up=True, hold_progress=0.0,
        set_no=1, sets=1, reps_done=0, reps_total=10, phase_left_s=3.0, gaps=0,
        protocol_errors=0, stim_state="off", stim_bursts=0, vm_vl_ratio=None,
        pct_mvc=(40.0, 30.0), mvc_mv=mvc_mv, envelope=np.full((2, 10), 0.2, "<f2"),
        raw=np.zeros((2, 10), "<f2"), blanked=np.zeros(10, bool),
    )  # fmt: skip
    return encode(p)


@pytest.mark.parametrize("variant", ["correct", "default_header"])
@pytest.mark.parametrize("mvc_mv", [(0.0, 0.0), (0.5, 0.4)])
def test_the_remote_percent_mvc_says_uncalibrated_when_the_mvc_is_unknown(
    qtbot: QtBot, variant: str, mvc_mv: tuple[float, float]
) -> None:
    model = RemoteModel(CLINIC, clock=lambda: 0.0)
    model.on_message(f"vmf/v1/{CLINIC}/st-a/stream", packet(mvc_mv))
    frame = model.frame("st-a")
    assert frame is not None
    if variant == "default_header":  # the model before: Header's default, calibrated
        frame.header = dataclasses.replace(frame.header, calibrated=True)
    win = TherapistWindow()
    qtbot.addWidget(win)
    win.show_frame(frame)
    says_uncalibrated = "(uncalibrated)" in win.labels["% MVC"].text()
    ok = says_uncalibrated is (mvc_mv == (0.0, 0.0))
    # A calibrated session reads the same either way: only the unknown MVC tells them apart.
    assert ok is (variant == "correct" or mvc_mv != (0.0, 0.0))
