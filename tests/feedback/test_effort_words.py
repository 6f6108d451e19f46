"""What the patient reads at the end of an effort, and the countdowns (feedback.outputs.effort).

The demo's patient eases off just before each work period ends, after the rep was held: the
terminal view must then say RELAX and show the hold as done, never PUSH and `hold 0 % done`
(the old rule did, in 3 reps of 3). A countdown shows the seconds still begun: 0.4 s left
reads 1 s, and the number never goes up within a phase.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from pathlib import Path

import pytest

from config.loader import load_settings
from devices.registry import open_device
from feedback.outputs import effort
from feedback.outputs.base import Listener
from feedback.outputs.effort import EffortTracker, whole_seconds
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.session_store import SessionStore
from feedback.outputs.terminal import ViewState, countdown, hold_text, instruction
from feedback.outputs.topics import Topics
from feedback.station import compose

VARIANTS = ("correct", "old_rule")


def old_instruction(view: ViewState) -> str:
    """The rule before: PUSH whenever below the band and not holding, held rep or not."""
    low, high = view.band
    pct = view.pct_mvc.get(view.target_channel, 0.0)
    if view.holding or low <= pct <= high:
        return "HOLD"
    return "EASE OFF A LITTLE" if pct > high else "PUSH"


def old_hold_text(view: ViewState) -> str:
    return f"hold {view.hold_progress * 100:3.0f} % done"


def shown(view: ViewState, variant: str) -> tuple[str, str]:
    if variant == "correct":
        return instruction(view), hold_text(view)
    return old_instruction(view), old_hold_text(view)


async def _demo_views(tmp_path: Path, seconds: float) -> list[ViewState]:
    """The terminal view's state after every block of the simulated demo (the view output
    comes before the listener, so each copy is what the screen would draw then)."""
    s = load_settings(environ={})
    publisher = MqttPublisher(
        "mqtt://127.0.0.1:9", Topics(s.session.clinic, s.session.station), client_id="st"
    )  # never run
    store = SessionStore(tmp_path / "s.db")
    view = ViewState()
    views: list[ViewState] = []
    copy = Listener(on_tick=lambda _: views.append(dataclasses.replace(view)))
    async with open_device("sim?speed=max", s) as device:
        session = compose(s, device, publisher, store, duration_s=seconds, view=view, extra=(copy,))
        await asyncio.wait_for(session.run(asyncio.Event()), 60)
    store.close()
    return views


@pytest.fixture(scope="module")
def demo_views(tmp_path_factory: pytest.TempPathFactory) -> list[ViewState]:
    # Three reps of the demo protocol (ready 1 s, then work 5 s and rest 5 s each).
    return asyncio.run(_demo_views(tmp_path_factory.mktemp("demo"), 31.0))


def efforts(views: list[ViewState]) -> list[list[ViewState]]:
    """The work periods, each as its run of views; judged here from the reps count alone."""
    runs: list[list[ViewState]] = []
    for prev, v in zip([None, *views], views, strict=False):
        if v.phase == "work":
            if prev is None or prev.phase != "work":
                runs.append([])
            runs[-1].append(v)
    return runs


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_push_once_the_demo_patient_has_held_the_rep(
    demo_views: list[ViewState], variant: str
) -> None:
    runs = efforts(demo_views)
    eased_off_after_hold = 0
    pushed: list[float] = []  # time left when PUSH showed after the hold
    undone: list[str] = []  # hold lines after the hold that do not say it is done
    for run in runs:
        start = run[0].reps_done or 0
        for v in run:
            if (v.reps_done or 0) <= start:
                continue  # not held yet
            word, hold = shown(v, variant)
            eased_off_after_hold += v.pct_mvc.get(v.target_channel, 0.0) < v.band[0]
            if word == "PUSH":
                pushed.append(v.phase_left_s or 0.0)
            if "rep held" not in hold:
                undone.append(hold)
    # The demo is what the newcomer saw: three reps held, then easing off before the end.
    assert len(runs) == 3 and [r[-1].reps_done for r in runs] == [1, 2, 3]
    assert eased_off_after_hold >= 3
    # Each fault on its own: the old rule both pushes (in each rep) and un-does the hold.
    assert (not pushed) is (variant == "correct"), pushed
    assert (not undone) is (variant == "correct"), undone[-3:]
    if variant == "old_rule":
        assert "hold   0 % done" in undone  # the line the newcomer read


def held_then_falling(left_s: float) -> ViewState:
    """A held rep whose level has fallen below the band with `left_s` of the effort to go."""
    return ViewState(
        band=(30.0, 60.0), pct_mvc={"VM": 18.0}, phase="work", holding=False,
        hold_progress=0.0, rep_held=True, reps_done=1, reps_total=10, phase_left_s=left_s,
    )  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("left_s", [2.0, 0.3])
def test_a_held_rep_reads_relax_and_done_at_any_time_left(variant: str, left_s: float) -> None:
    word, hold = shown(held_then_falling(left_s), variant)
    ok = word == "RELAX" and hold == "hold 100 % done: rep held"
    assert ok is (variant == "correct")


def test_push_still_shows_while_the_rep_can_be_won() -> None:
    """The new rule does not silence PUSH where it is right: not held and time to act."""
    v = dataclasses.replace(held_then_falling(2.0), rep_held=False)
    assert instruction(v) == "PUSH"
    assert instruction(dataclasses.replace(v, phase_left_s=0.3)) == "RELAX"  # the last moment
    assert instruction(dataclasses.replace(v, pct_mvc={"VM": 80.0})) == "EASE OFF A LITTLE"
    free = dataclasses.replace(v, free=True, phase_left_s=0.0, contracting=False)
    assert instruction(free) == "PUSH WHEN READY"  # free practice has no last moment


def rounded(left_s: float) -> int:
    return int(f"{left_s:.0f}")


COUNTDOWNS = {"correct": whole_seconds, "round": rounded, "floor": math.floor}


@pytest.mark.parametrize("variant", list(COUNTDOWNS))
def test_a_countdown_shows_the_seconds_still_begun(variant: str) -> None:
    count = COUNTDOWNS[variant]
    lefts = [round(1.3 - 0.05 * i, 2) for i in range(27)]  # 1.3 s down to 0 in 50 ms steps
    shown = [count(x) for x in lefts]
    never_up = all(b <= a for a, b in itertools.pairwise(shown))
    no_zero_while_time_left = all(n > 0 for n, x in zip(shown, lefts, strict=True) if x > 0)
    ok = count(0.4) == 1 and count(3.0) == 3 and never_up and no_zero_while_time_left
    assert ok is (variant == "correct")


def test_the_terminal_countdowns_read_whole_seconds_begun() -> None:
    v = ViewState(phase="work", reps_total=10, phase_left_s=0.4)
    assert countdown(v) == "this effort: 1 s to go"
    assert countdown(dataclasses.replace(v, phase="rest", phase_left_s=0.01)) == "rest 1 s"
    assert countdown(dataclasses.replace(v, phase="ready", phase_left_s=1.3)) == "starting in 2 s"
    assert whole_seconds(2.0000000001) == 2  # samples / rate a hair over a whole second


@pytest.mark.parametrize("variant", ["correct", "no_new_effort_on_a_rising_clock"])
def test_work_straight_after_work_is_a_new_effort(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no rest between (rest_s = 0) the phase stays `work`: the clock jumping back up is
    what starts the next effort, whose rep is not held yet."""
    if variant != "correct":
        monkeypatch.setattr(effort, "NEW_EFFORT_RISE_S", math.inf)
    t = EffortTracker()
    t.update("work", 5.0, 0)
    assert t.update("work", 2.0, 1)  # held in the first effort
    held_next = t.update("work", 4.98, 1)  # the next effort has begun
    ok = not held_next and t.update("work", 1.0, 2)
    assert ok is (variant == "correct")


class LatestCountTracker(EffortTracker):
    """The rule before: judged on the newest update's count alone, however old its message."""

    def update(self, phase: str, left_s: float | None, reps_done: int | None) -> bool:
        held = super().update(phase, left_s, reps_done)
        start = self._reps_at_start
        self.held = held and reps_done is not None and start is not None and reps_done > start
        return self.held


# An effort as a page fed from two latest-wins lanes may see it: the stream with the time left,
# `live` without; a `live` from before the rep lands after a stream packet from after it.
CROSSED = [("work", 5.0, 0), ("work", 2.4, 1), ("work", None, 0), ("work", 2.2, 1)]


@pytest.mark.parametrize("variant", ["correct", "latest_count"])
def test_a_stale_lower_count_does_not_unhold_the_rep(variant: str) -> None:
    t = EffortTracker() if variant == "correct" else LatestCountTracker()
    held = [t.update(p, left, r) for p, left, r in CROSSED]
    ok = held == [False, True, True, True]
    assert ok is (variant == "correct"), held
    assert not t.update("rest", 5.0, 1) and not t.update("work", 5.0, 1)  # the next effort


@pytest.mark.parametrize("variant", ["correct", "band_only"])
def test_uncalibrated_the_zone_is_the_exercise_own_holding(variant: str) -> None:
    """Without a calibration the band rests on a made-up maximum: a level inside it is not in
    the band, one above it is not too hard; only `holding` says anything."""
    band = (30.0, 60.0)

    def zone(pct: float, holding: bool) -> str:
        if variant == "correct":
            return effort.zone_of(pct, band, holding, calibrated=False)
        return effort.zone_of(pct, band, holding)

    zones = [zone(45.0, False), zone(80.0, False), zone(10.0, True), zone(80.0, True)]
    ok = zones == ["below", "below", "in_band", "in_band"]
    assert ok is (variant == "correct"), zones
    assert effort.zone_of(45.0, band, False) == "in_band"  # calibrated: the band judges
