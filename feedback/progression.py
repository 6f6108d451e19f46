"""Progression: raise the target band when the patient holds it for N reps in a row.

Pure. A raise is decided when the Nth rep in a row is counted and takes effect at the start of
the next work period, a sample index known in advance, so the band in force at every sample (and
therefore every rep) is the same whatever the block split, as long as a block is shorter than the
time from the rep to the next work start (blocks are at most 100 ms; that time is at least the
rest). A work period that ends without a rep breaks the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import ProgressionSettings
from feedback.exercise import Exercise, ExerciseEvent, Phase, PhaseChanged, RepCompleted


@dataclass(frozen=True, slots=True)
class BandRaised:
    low_pct: float
    high_pct: float
    from_index: int  # first sample judged against the new band
    after_rep: int


class Progression:
    def __init__(self, rule: ProgressionSettings, low_pct: float, high_pct: float) -> None:
        self.rule = rule
        self.low_pct, self.high_pct = low_pct, high_pct
        self._streak = 0
        self._rep_periods: set[int] = set()

    def update(self, events: list[ExerciseEvent], exercise: Exercise) -> list[BandRaised]:
        raised: list[BandRaised] = []
        for ev in events:
            if isinstance(ev, RepCompleted):
                self._rep_periods.add(ev.period)
                self._streak += 1
                if self.rule.after_reps and self._streak >= self.rule.after_reps:
                    self._streak = 0
                    raised.extend(self._raise(ev, exercise))
            elif (
                isinstance(ev, PhaseChanged)
                and ev.phase is Phase.REST
                and ev.rep not in self._rep_periods
            ):
                self._streak = 0  # that work period ended without a rep
        return raised

    def _raise(self, rep: RepCompleted, exercise: Exercise) -> list[BandRaised]:
        step = min(self.rule.step_pct, self.rule.max_high_pct - self.high_pct)
        start = exercise.work_start_index(rep.period + 1)
        if step <= 0 or start is None:
            return []
        self.low_pct += step
        self.high_pct += step
        return [BandRaised(self.low_pct, self.high_pct, start, rep.rep)]
