"""A reference renderer for patient cues from MQTT (a tablet, a wearable buzzer): pure, no Qt.

It subscribes to `vmf/v1/<clinic>/<station>/cue` (QoS 1, lossless) and folds each `cue` message
into a `PatientState`: the phase and its countdown, the zone, the reps, the band, and whether the
signal is good enough to cue at all. Every cue carries the phase, the time left in it, the reps and
the band at the moment it was made, so a renderer that starts in the middle of a session is right
from the first cue it sees. For the continuous % MVC bar a tablet adds the `live` topic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

from feedback.outputs.effort import EffortTracker, ZoneName, effort_word, whole_seconds

# What a one-motor buzzer does on each cue: (pulses, ms per pulse); None: nothing.
BUZZ: dict[tuple[str, str], tuple[int, int]] = {
    ("zone", "below"): (1, 150),
    ("zone", "above"): (3, 80),
    ("zone", "in_band"): (1, 40),
    ("rep", "*"): (2, 120),
    ("phase", "work"): (1, 400),
    ("phase", "done"): (3, 300),
}


# Short words for a small screen; RELAX is the rest's word too, so a held rep keeps it.
WORK_WORDS = {"push": "PUSH", "hold": "HOLD", "ease": "EASY", "relax": "RELAX"}
ZONES: dict[str, ZoneName] = {"below": "below", "in_band": "in_band", "above": "above"}


@dataclass(slots=True)
class PatientState:
    session: str | None = None
    phase: str = "ready"
    zone: str | None = None  # below / in_band / above, during work only
    reps_done: int = 0
    reps_total: int = 0
    band: tuple[float, float] | None = None
    quality: str = "ok"  # why zone cues are withheld, or "ok"
    phase_left_s: float = 0.0
    at_t: float = 0.0  # station time the newest cue was made
    cues: int = 0
    last_msg_id: int = 0
    effort: EffortTracker = field(default_factory=EffortTracker)  # this effort's rep held?

    def apply(self, msg: dict[str, Any]) -> tuple[int, int] | None:
        """Fold one cue message in; returns the buzz pattern for it (None: stay quiet).
        Copies (same or older msg_id of the same session) change nothing."""
        if msg.get("type") != "cue":
            return None
        if msg["session"] != self.session:
            fresh = PatientState(session=msg["session"])  # a new session: start afresh
            for f in fields(self):
                setattr(self, f.name, getattr(fresh, f.name))
        elif msg["msg_id"] <= self.last_msg_id:
            return None
        self.last_msg_id = msg["msg_id"]
        self.cues += 1
        kind, value = msg["kind"], msg["value"]
        if "phase" in msg:
            self.phase = msg["phase"]
            self.phase_left_s = float(msg["phase_left_s"])
            self.reps_done, self.reps_total = int(msg["reps_done"]), int(msg["reps_total"])
            self.band = (float(msg["band"][0]), float(msg["band"][1]))
            self.at_t = float(msg["t"])
        if kind == "phase":
            self.phase, self.zone = value, None
        elif kind == "zone":
            self.zone = value
        elif kind == "rep":
            self.reps_done = max(self.reps_done, int(value))
        elif kind == "quality":
            self.quality = value
            self.zone = None
        self.effort.update(self.phase, self.phase_left_s, self.reps_done)
        return BUZZ.get((kind, value)) or BUZZ.get((kind, "*"))

    def countdown_s(self, now: float | None = None) -> float:
        """Seconds left in the phase, counted down locally from the newest cue."""
        now = time.time() if now is None else now
        return max(0.0, self.phase_left_s - (now - self.at_t))

    def countdown_text(self, now: float | None = None) -> str:
        """The countdown as a screen shows it: the seconds still begun, `1 s` with 0.4 s left."""
        return f"{whole_seconds(self.countdown_s(now))} s"

    def word(self, now: float | None = None) -> str:
        """The one word a patient screen shows (as the station's patient view does); `now`, as
        for `countdown_s`, tells the last moment of an effort."""
        if self.quality != "ok":
            return "CHECK ELECTRODES"
        if self.phase == "work":
            zone = ZONES.get(self.zone or "", "below")
            left, held = self.countdown_s(now), self.effort.held
            return WORK_WORDS[effort_word(zone, held=held, left_s=left, timed=self.reps_total > 0)]
        return {
            "ready": "GET READY",
            "rest": "RELAX",
            "done": "WELL DONE",
            "calibrating": "CALIBRATION",
        }.get(self.phase, "")
