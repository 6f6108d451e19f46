"""Cue rules: turn zone and exercise changes into the few discrete cues a patient acts on."""

from __future__ import annotations

from dataclasses import dataclass

from feedback.exercise import ExerciseState, Phase, PhaseChanged, RepCompleted
from feedback.processing.activation import Zone


@dataclass(frozen=True, slots=True)
class Cue:
    kind: str  # "phase" | "zone" | "rep" | "quality"
    value: str  # phase name, zone name, rep number, or why zone cues are withheld ("ok" after)
    index: int  # sample index that caused it
    t_sample: float  # host time of that sample's arrival, for latency accounting


class CueRules:
    """Emits a cue only on change; zone cues only during work (at rest the cue is 'rest').

    While the target channel's signal is bad, zone cues are withheld and one quality cue says
    why; when the signal recovers a quality cue "ok" is sent and the zone is cued afresh.
    """

    def __init__(self) -> None:
        self._zone: Zone | None = None
        self._withheld: str | None = None

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
        if withheld is None and state.phase is Phase.WORK and zone != self._zone:
            self._zone = zone
            cues.append(Cue("zone", zone.name.lower(), index, t_sample))
        return cues
