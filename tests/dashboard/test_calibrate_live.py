"""The dashboard's Calibrate button acts mid-session: the exercise pauses (a `calibrating` phase:
no reps, no zone cues), the calibration state machine runs on the session's blocks while the
simulated patient follows its prompts, a passing result is stored in the patient profile and
sets the chain's %MVC, and the exercise resumes at the rest before its next work period."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from control_rig import run_pressing

from config.loader import load_settings
from feedback.clinic.validation import check
from feedback.dashboard.controls import Calibrate
from feedback.exercise import Phase, PhaseChanged, RepCompleted
from feedback.outputs.topics import MessageNumberer, Topics

# Work at 1–4, 5–8, … s; a 7 s calibration: rest 2 s, two 2 s contractions 1 s apart.
SETTINGS = {
    "protocol.ready_s": 1.0,
    "protocol.work_s": 3.0,
    "protocol.hold_s": 1.0,
    "protocol.rest_s": 1.0,
    "protocol.reps": 6,
    "calibration.rest_s": 2.0,
    "calibration.mvc_trials": 2,
    "calibration.mvc_s": 2.0,
    "calibration.mvc_rest_s": 1.0,
}
CAL_S = 7.0


async def run_with_calibration(tmp_path: Path, press_at_s: float) -> tuple[Any, ...]:
    s = load_settings(
        environ={}, overrides={**SETTINGS, "calibration.profile_dir": str(tmp_path / "p")}
    )
    run = await run_pressing(tmp_path, s, Calibrate(), press_at_s, duration_s=15.0)
    return run.session, run.ticks, run.log, run.rate, run.link, run.notes


async def test_calibrate_pauses_calibrates_stores_and_resumes(tmp_path: Path) -> None:
    session, ticks, log, rate, link, notes = await run_with_calibration(tmp_path, 3.0)
    phases = [ev for t in ticks for ev in t.exercise.events if isinstance(ev, PhaseChanged)]
    start = next(ev for ev in phases if ev.phase is Phase.CALIBRATING)
    assert start.rep == 1  # pressed during work period 1 (1–4 s)
    end = start.at_index + round(CAL_S * rate)
    after = [(ev.phase, ev.rep, ev.at_index - end) for ev in phases if ev.at_index > start.at_index]
    # Work 1 was cut short: the rest before work 2, then the timeline goes on as prescribed.
    assert after[:3] == [
        (Phase.REST, 1, 0),
        (Phase.WORK, 2, round(1.0 * rate)),
        (Phase.REST, 2, round(4.0 * rate)),
    ]
    calibrating = [t for t in ticks if t.exercise.phase is Phase.CALIBRATING]
    assert calibrating and all(t.calibration is not None for t in calibrating)
    assert not [c for t in calibrating for c in t.cues if c.kind == "zone"]
    reps = [ev for t in ticks for ev in t.exercise.events if isinstance(ev, RepCompleted)]
    assert not [r for r in reps if start.at_index <= r.at_index < end]
    # Stored, logged, in use.
    stored = [d for k, d in log if k == "calibration"]
    assert len(stored) == 1 and stored[0]["source"] == "measured"
    # The event as the MQTT output numbers and sends it passes the clinic's contract.
    topics = Topics(session.settings.session.clinic, session.settings.session.station)
    message = MessageNumberer(session.session_id).envelope("calibration", stored[0])
    check(topics.event, json.dumps(message).encode())
    profile = json.loads((tmp_path / "p" / f"{session.settings.session.patient}.json").read_text())
    entry = profile["calibrations"][session.settings.session.side]
    assert entry["warnings"] == [] and entry["mvc_mv"]["VM"] > entry["rest_mean_mv"]["VM"]
    assert session.settings.calibration.mvc_mv["VM"] == entry["mvc_mv"]["VM"]
    pipeline = session.pipeline
    assert pipeline is not None and float(pipeline.chain._mvc[0, 0]) == entry["mvc_mv"]["VM"]
    assert link.feed.header.mvc_mv["VM"] == entry["mvc_mv"]["VM"]
    # The onset rule's thresholds follow the new rest (they were learnt from the first 0.5 s).
    assert pipeline.onset.baseline is not None
    rest_mean, rest_sd = pipeline.onset.baseline
    vm = pipeline.channels.index("VM")
    assert float(rest_mean[vm]) == entry["rest_mean_mv"]["VM"]
    assert float(rest_sd[vm]) == entry["rest_sd_mv"]["VM"]
    # The therapist saw the prompts and the outcome.
    assert any("Relax the leg completely" in n for n in notes)
    assert any("Contraction 2 of 2" in n for n in notes)
    assert notes[-1].startswith("calibration stored, in use: MVC VM ")
    assert ("calibrate_requested", {"source": "dashboard"}) in log
