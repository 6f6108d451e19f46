"""The patient's word during a timed effort, and the countdown's whole seconds: one rule for the
terminal view, the Qt patient view and the cue renderer (web/lib/effort.js mirrors it).

A rep that has been held is done: the patient easing off before the clock ends (as real
patients do) is told to RELAX, the word the rest that follows keeps, never to PUSH again. In
the last moment of an effort a PUSH cannot be acted on either, so below the band reads RELAX
there too. Above the band still reads EASE OFF: too hard is worth saying at any time.
"""

from __future__ import annotations

import math
from typing import Literal

Word = Literal["push", "hold", "ease", "relax"]
ZoneName = Literal["below", "in_band", "above"]

# Less than this left of a work period, below the band: too late for a PUSH to be acted on.
LAST_MOMENT_S = 0.5
# A rise of the time left by more than this starts a new effort: successive updates may come
# from slightly different moments (a page's two message lanes), while a new work period starts
# with more than 0.5 s to go (config.settings: work_s > 0.5).
NEW_EFFORT_RISE_S = 0.25
# phase_left_s is samples / rate: a float a hair above a whole second must not read one more.
_FUZZ_S = 1e-6


def zone_of(
    pct: float, band: tuple[float, float], holding: bool, *, calibrated: bool = True
) -> ZoneName:
    """The zone as the views judge it: `holding` (the exercise's own, with its hysteresis)
    counts as in the band even a hair under its lower edge. Without a calibration the band
    rests on a made-up maximum, so `holding` is all there is to judge by."""
    low, high = band
    if holding or (calibrated and low <= pct <= high):
        return "in_band"
    if not calibrated:
        return "below"
    return "above" if pct > high else "below"


def effort_word(zone: ZoneName, *, held: bool, left_s: float | None, timed: bool = True) -> Word:
    """What to do now during work. `held`: this effort's rep is already counted; `left_s`:
    the time left of the effort, None when unknown; `timed` False (free practice): no clock
    and no reps, so neither a last moment nor a held rep (its time left reads 0)."""
    if zone == "in_band":
        return "hold"
    if zone == "above":
        return "ease"
    if not timed:
        return "push"
    if held or (left_s is not None and left_s < LAST_MOMENT_S):
        return "relax"
    return "push"


def whole_seconds(left_s: float) -> int:
    """A countdown's number: the seconds still begun (0.4 s left reads 1), so it never shows
    0 while time is left and never goes up while the time left falls."""
    return max(0, math.ceil(left_s - _FUZZ_S))


class EffortTracker:
    """Whether the running effort's rep is held, from what every view is given each update:
    the phase, its time left (None: not known in this update) and the reps count. A new effort
    starts when the phase changes or its time left goes up (work straight after work, with no
    rest between); a view that opens after the rep was held cannot know and reads it as not
    held. Within an effort the highest count seen stands: a page fed from two latest-wins lanes
    may get an older, lower count after a newer one, and that must not un-hold the rep."""

    def __init__(self) -> None:
        self._phase: str | None = None
        self._left = math.inf
        self._reps_at_start: int | None = None
        self._reps_seen: int | None = None  # the highest count since this effort started
        self.held = False

    def update(self, phase: str, left_s: float | None, reps_done: int | None) -> bool:
        rose = left_s is not None and left_s > self._left + NEW_EFFORT_RISE_S
        if phase != self._phase or rose:
            self._reps_at_start = self._reps_seen = reps_done
        elif reps_done is not None:
            seen = self._reps_seen
            self._reps_seen = reps_done if seen is None else max(seen, reps_done)
        self._phase = phase
        if left_s is not None:
            self._left = left_s
        start, seen = self._reps_at_start, self._reps_seen
        counted = seen is not None and start is not None and seen > start
        self.held = phase == "work" and counted
        return self.held
