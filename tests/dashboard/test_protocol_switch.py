"""The dashboard's protocol picker acts mid-session: the picked protocol takes over at the next
rest/ready boundary (never inside a work period), its timeline starts there, the reps already
done stay counted, and `protocol_changed` is logged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from control_rig import run_pressing

from config.loader import load_settings
from config.protocols import load_protocol
from devices.base import SampleBlock
from feedback.clinic.validation import check
from feedback.dashboard.controls import PickProtocol
from feedback.exercise import Phase, PhaseChanged, RepCompleted
from feedback.outputs.topics import MessageNumberer, Topics
from feedback.pipeline import Pipeline

# ready 1, work 3, rest 1: work at 1–4, 5–8, … s; the simulated patient follows this script.
SHORT = {
    "protocol.name": "short",
    "protocol.ready_s": 1.0,
    "protocol.work_s": 3.0,
    "protocol.hold_s": 1.0,
    "protocol.rest_s": 1.0,
    "protocol.reps": 6,
    "protocol.sets": 1,
}
NEW = "step-up-down"  # ready 3, work 4, hold 1.5, rest 3; band 35–70 % MVC


async def run_with_pick(tmp_path: Path, name: str, pick_at_s: float) -> tuple[Any, ...]:
    s = load_settings(environ={}, overrides=SHORT)
    run = await run_pressing(tmp_path, s, PickProtocol(name), pick_at_s, duration_s=19.0)
    return run.result, run.ticks, run.log, run.rate, run.link, run.session


async def test_a_picked_protocol_takes_over_at_the_end_of_the_work_period(tmp_path: Path) -> None:
    result, ticks, log, rate, link, session = await run_with_pick(tmp_path, NEW, 3.0)
    changed = [d for k, d in log if k == "protocol_changed"]
    assert len(changed) == 1 and changed[0]["name"] == NEW and changed[0]["source"] == "dashboard"
    assert ("protocol_picked", {"name": NEW, "source": "dashboard"}) in log
    topics = Topics(session.settings.session.clinic, session.settings.session.station)
    message = MessageNumberer(session.session_id).envelope("protocol_changed", changed[0])
    check(topics.event, json.dumps(message).encode())  # the clinic logger accepts it
    at = changed[0]["from_index"]
    origin = ticks[0].processed.block.first_index
    # Picked at ≈3 s inside work 1 (1–4 s): the switch waits for that work period's end.
    assert at - origin == round(4.0 * rate)
    new, target = load_protocol(NEW)
    assert (changed[0]["low_pct"], changed[0]["high_pct"]) == (target.low_pct, target.high_pct)
    phases = [ev for t in ticks for ev in t.exercise.events if isinstance(ev, PhaseChanged)]
    after = [(ev.phase, ev.rep, ev.at_index - at) for ev in phases if ev.at_index >= at]
    ready, work, rest = (round(x * rate) for x in (new.ready_s, new.work_s, new.rest_s))
    assert after[:5] == [
        (Phase.READY, 0, 0),
        (Phase.WORK, 1, ready),
        (Phase.REST, 1, ready + work),
        (Phase.WORK, 2, ready + work + rest),
        (Phase.REST, 2, ready + 2 * work + rest),
    ]
    before = [ev for ev in phases if ev.at_index < at]
    assert [(ev.phase, ev.rep) for ev in before] == [(Phase.WORK, 1)]  # no rest of the old one
    reps = [ev for t in ticks for ev in t.exercise.events if isinstance(ev, RepCompleted)]
    assert [r.rep for r in reps] == list(range(1, len(reps) + 1))  # numbering carries on
    assert reps[0].at_index < at and any(r.at_index >= at for r in reps)
    for r in reps:  # each later rep inside a work period of the new timeline
        if r.at_index >= at:
            into = (r.at_index - at - ready) % (work + rest)
            assert r.at_index - at >= ready and into < work
    assert result.reps == len(reps)
    last = ticks[-1]
    assert (last.protocol, last.band) == (NEW, (target.low_pct, target.high_pct))
    assert last.reps_total == 1 + new.reps * new.sets
    assert link.feed.header.protocol == NEW and link.feed.header.reps_total == last.reps_total
    assert link.note == f"protocol {NEW} from the next rest"


async def test_an_unknown_protocol_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    _, ticks, log, _, link, _ = await run_with_pick(tmp_path, "no-such", 3.0)
    assert "protocol_changed" not in [k for k, _ in log]
    failed = [d for k, d in log if k == "control_failed"]
    assert failed and failed[0]["control"] == "PickProtocol"
    assert "unknown protocol" in failed[0]["error"]
    assert {t.protocol for t in ticks} == {"short"}
    assert link.note.startswith("PickProtocol failed: ProtocolError")


def blocks(rate: float, seconds: float, size: int, level: float) -> list[SampleBlock]:
    """Blocks of a constant level on both channels (VM, VL)."""
    n = round(seconds * rate)
    data = np.full((2, n), level, dtype=np.float32)
    return [
        SampleBlock(i, i / rate, rate, ("VM", "VL"), data[:, i : i + size])
        for i in range(0, n, size)
    ]


def test_a_switch_during_rest_takes_effect_with_the_next_block() -> None:
    s = load_settings(environ={}, overrides=SHORT)
    rate = 1000.0
    pipe = Pipeline(s, rate, ("VM", "VL"))
    new, target = load_protocol(NEW)
    switched = []
    for block in blocks(rate, 12.0, 100, 0.0):
        if block.first_index == 4500:  # in the rest of period 1 (4–5 s)
            assert pipe.exercise.state.phase is Phase.REST
            pipe.change_protocol(new, target.low_pct, target.high_pct)
        tick = pipe.process(block)
        if tick.switched_at is not None:
            switched.append(tick.switched_at)
            assert tick.exercise.events[0] == PhaseChanged(Phase.READY, 0, 4500)
    assert switched == [4500]
    assert pipe.exercise.work_start_index(1) == 4500 + round(new.ready_s * rate)
    assert (pipe.detector.low_pct, pipe.detector.high_pct) == (target.low_pct, target.high_pct)
