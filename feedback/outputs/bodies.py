"""Message bodies more than one output writes in the same shape (the session log and MQTT)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from feedback.cues import Cue
    from feedback.exercise import ExerciseState
    from feedback.pipeline import Tick


class CueContext(Protocol):
    """What a cue's message shows beside it: a Tick has it, and so has the `CuesDue` item that
    carries the cues ahead of their Tick."""

    @property
    def exercise(self) -> ExerciseState: ...
    @property
    def band(self) -> tuple[float, float]: ...
    @property
    def reps_total(self) -> int: ...


def cue_body(cue: Cue, tick: CueContext) -> dict[str, Any]:
    """A cue and what a tablet or buzzer needs besides it to show the patient's state."""
    ex = tick.exercise
    return {
        "kind": cue.kind,
        "value": cue.value,
        "index": cue.index,
        "t_sample": round(cue.t_sample, 6),
        "phase": ex.phase.name.lower(),
        "phase_left_s": round(ex.phase_left_s, 2),
        "reps_done": ex.reps_done,  # an integer for the v1 contract: 0 in free practice
        "reps_total": tick.reps_total,
        "band": [round(tick.band[0], 2), round(tick.band[1], 2)],
    }


def onset_state(tick: Tick) -> dict[str, bool]:
    """Each channel's onset state at the block's last sample (all off until the rest baseline
    is known)."""
    o = tick.onsets
    if o is None or not o.active.shape[1]:
        return {}
    return dict(zip(tick.processed.block.channels, o.active[:, -1].tolist(), strict=True))
