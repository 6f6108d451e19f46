"""The cue renderer (a tablet, a buzzer) reads the same effort rule as the station's views:
after a `rep` cue the patient easing off reads RELAX, not PUSH, and its countdown shows the
seconds still begun."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.dashboard.cue_renderer import WORK_WORDS, ZONES, PatientState
from feedback.outputs.effort import effort_word


def cue(msg_id: int, kind: str, value: str, phase: str, left: float, reps: int) -> dict[str, Any]:
    return {
        "type": "cue", "session": "s-1", "msg_id": msg_id, "kind": kind, "value": value,
        "phase": phase, "phase_left_s": left, "reps_done": reps, "reps_total": 10,
        "band": [30.0, 60.0], "t": 100.0 + (5.0 - left),
    }  # fmt: skip


# One effort: work starts, in the band, the rep held, then below the band with 2 s to go.
EFFORT = [
    cue(1, "phase", "work", "work", 5.0, 0),
    cue(2, "zone", "below", "work", 4.9, 0),
    cue(3, "zone", "in_band", "work", 4.4, 0),
    cue(4, "rep", "1", "work", 2.4, 1),
    cue(5, "zone", "below", "work", 2.0, 1),
]


def old_word(state: PatientState) -> str:
    return {"below": "PUSH", "in_band": "HOLD", "above": "EASY"}.get(state.zone or "", "PUSH")


@pytest.mark.parametrize("variant", ["correct", "old_rule"])
def test_after_a_rep_cue_below_the_band_reads_relax(variant: str) -> None:
    state = PatientState()
    words = []
    for msg in EFFORT:
        state.apply(msg)
        now = msg["t"]  # the screen reads as each cue lands
        words.append(state.word(now) if variant == "correct" else old_word(state))
    ok = words[1] == "PUSH" and words[2] == "HOLD" and words[-1] == "RELAX"
    assert ok is (variant == "correct"), words


def test_the_next_effort_starts_unheld_and_the_countdown_reads_whole_seconds() -> None:
    state = PatientState()
    for msg in EFFORT:
        state.apply(msg)
    state.apply(cue(6, "phase", "rest", "rest", 5.0, 1))
    assert state.word(state.at_t) == "RELAX"
    state.apply(cue(7, "phase", "work", "work", 5.0, 1))
    state.apply(cue(8, "zone", "below", "work", 4.9, 1))
    assert state.word(state.at_t) == "PUSH"
    assert state.countdown_text(state.at_t + 4.5) == "1 s"  # 0.4 s left


def free_cue(msg_id: int, kind: str, value: str) -> dict[str, Any]:
    """Free practice as the station cues it: no reps prescribed, and no time left once working
    (feedback.exercise: an untimed work phase reads 0 s left)."""
    return {
        "type": "cue", "session": "s-free", "msg_id": msg_id, "kind": kind, "value": value,
        "phase": "work", "phase_left_s": 0.0, "reps_done": 0, "reps_total": 0,
        "band": [30.0, 60.0], "t": 100.0,
    }  # fmt: skip


def word_ignoring_the_clock(state: PatientState, now: float) -> str:
    """The rule before: the countdown's 0 s taken as the last moment, timed or not."""
    zone = ZONES.get(state.zone or "", "below")
    left = state.countdown_s(now)
    return WORK_WORDS[effort_word(zone, held=state.effort.held, left_s=left)]


@pytest.mark.parametrize("variant", ["correct", "clock_ignored"])
def test_free_practice_below_the_band_reads_push(variant: str) -> None:
    state = PatientState()
    state.apply(free_cue(1, "phase", "work"))
    state.apply(free_cue(2, "zone", "below"))
    now = 101.0
    word = state.word(now) if variant == "correct" else word_ignoring_the_clock(state, now)
    ok = word == "PUSH"
    assert ok is (variant == "correct"), word
    state.apply(free_cue(3, "zone", "in_band"))
    assert state.word(now) == "HOLD"
