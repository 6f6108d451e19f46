"""Cue rules: turn zone and exercise changes into the few discrete cues a patient acts on."""

from __future__ import annotations

from dataclasses import dataclass

from feedback.exercise import WORK, ExerciseState, PhaseChanged, RepCompleted
from feedback.processing.activation import Zone


@dataclass(frozen=True, slots=True)
class Cue:
    kind: str  # "phase" | "zone" | "rep" | "quality" | "calibration"
    # phase name, zone name, rep number, why zone cues are withheld ("ok" after), or "needed"
    value: str
    index: int  # sample index that caused it
    t_sample: float  # host time of that sample's arrival, for latency accounting


class CueRules:
    """Emits a cue only on change; zone cues only during work (at rest the cue is 'rest').

    While the target channel's signal is bad, zone cues are withheld and one quality cue says
    why; when the signal recovers a quality cue "ok" is sent and the zone is cued afresh.

    Without a calibration (`band=False`) the zone against a % MVC band would be judged against a
    made-up MVC: no zone cue is given; instead, once work starts, one cue asks for a
    calibration. Setting `band` to True (a calibration passed) cues the zone from then on.
    """

    def __init__(self, *, band: bool = True) -> None:
        self.band = band
        self._zone: Zone | None = None
        self._withheld: str | None = None
        self._asked = False

    def update(
        self,
        state: ExerciseState,
        zone: Zone,
        index: int,
        t_sample: float,
        withheld: str | None = None,
    ) -> list[Cue]:
        cues: list[Cue] = []
        for ev in state.events:
            if isinstance(ev, PhaseChanged):
                cues.append(Cue("phase", ev.phase.name.lower(), ev.at_index, t_sample))
                self._zone = None
            elif isinstance(ev, RepCompleted):
                cues.append(Cue("rep", str(ev.rep), ev.at_index, t_sample))
        if withheld != self._withheld:
            self._withheld = withheld
            self._zone = None
            cues.append(Cue("quality", withheld or "ok", index, t_sample))
        working = state.phase is WORK  # (the member looked up once: feedback.exercise)
        if not self.band:
            if working and not self._asked:
                self._asked = True
                cues.append(Cue("calibration", "needed", index, t_sample))
            return cues
        if withheld is None and working and zone != self._zone:
            self._zone = zone
            cues.append(Cue("zone", zone.name.lower(), index, t_sample))
        return cues
