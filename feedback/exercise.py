"""The exercise protocol as a state machine on the sample timeline:
ready → ((work ⇄ rest) × reps, set rest) × sets.

Time is the device's sample index, not the wall clock, so a replay at full speed or a block split
of any size gives the same reps at the same samples. During work, a rep counts once the target
channel has stayed in the band for `hold_s` without a break.

A free protocol (`kind = "free"`: free practice, a replay) has no timeline: ready, then one
endless work period with no reps and no countdown; contractions are counted elsewhere
(feedback.processing.contraction_counter).
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass, field

import numpy as np

from config.settings import ProtocolSettings
from feedback.processing.activation import Zone, run_starts

IN_BAND = int(Zone.IN_BAND)  # (an IntEnum member compared per block costs a lookup each time)


def _count_in_band(zone: np.ndarray) -> int:
    """Samples of the block in the band. A one-byte zone (the pipeline's int8) is counted as
    bytes: `np.count_nonzero(zone == IN_BAND)` costs ten times as much on a 20-sample block."""
    if zone.itemsize == 1:
        return zone.tobytes().count(IN_BAND)
    return int(np.count_nonzero(zone == IN_BAND))


class Phase(enum.IntEnum):
    READY = 0
    WORK = 1
    REST = 2
    DONE = 3
    CALIBRATING = 4  # paused for a calibration during the session: no reps, cues or stimulation


# The members the usual block compares with, looked up once: `Phase.WORK` goes through the
# enum's class attribute lookup (0.2 µs, ten times a global's) and a block makes six of them.
READY, WORK, DONE = Phase.READY, Phase.WORK, Phase.DONE


@dataclass(frozen=True, slots=True)
class RepCompleted:
    rep: int
    at_index: int  # sample index at which the hold was achieved
    # From the work cue to first entering the band ("reaction + rise"): the exercise's own clock,
    # not the time to band every output shows (from the contraction's onset, docs/metrics.md).
    cue_to_band_s: float | None
    period: int = 0  # the work period it was counted in


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    phase: Phase
    rep: int  # 1-based number of the work period (0 while getting ready)
    at_index: int


ExerciseEvent = RepCompleted | PhaseChanged


@dataclass(slots=True)
class ExerciseState:
    phase: Phase = Phase.READY
    period: int = 0  # 1-based index of the current work period, over all sets
    set_no: int = 1  # 1-based set of the current period
    reps_done: int = 0
    holding: bool = False
    hold_progress: float = 0.0  # 0..1 of the hold needed for this rep
    phase_left_s: float = 0.0
    session_left_s: float = 0.0
    in_band_s: float = 0.0  # total time in the band during work periods
    events: list[ExerciseEvent] = field(default_factory=list)


class Exercise:
    def __init__(
        self, protocol: ProtocolSettings, rate_hz: float, after: ExerciseState | None = None
    ) -> None:
        """`after`: the state of the protocol this one replaces mid-session; its reps and time
        in band carry on (rep numbers keep counting), and the new timeline's READY is announced."""
        self.protocol = protocol
        self.rate_hz = rate_hz
        self.free = protocol.kind == "free"
        self._ready = round(protocol.ready_s * rate_hz)
        self._work = round(protocol.work_s * rate_hz)
        self._hold = round(protocol.hold_s * rate_hz)
        n = protocol.reps * protocol.sets
        # The rest after each period: the set rest after a set's last rep, except the very last.
        rest = np.full(n, round(protocol.rest_s * rate_hz), dtype=np.int64)
        rest[protocol.reps - 1 : n - 1 : protocol.reps] = round(protocol.set_rest_s * rate_hz)
        lengths = self._work + rest
        self._starts = self._ready + np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
        self._ends = self._starts + lengths  # end of each period's rest
        self._total = int(self._ends[-1])
        if self.free:  # one work period that never ends
            self._starts, self._work = self._starts[:1], np.iinfo(np.int64).max // 4
            self._total = np.iinfo(np.int64).max // 2
        self._start_list = self._starts.tolist()
        self._end_list = self._ends.tolist()
        self._reps, self._sets = protocol.reps, protocol.sets
        # The run of sample offsets sharing one (phase, period), as (phase, period, from,
        # to), of the last block: the usual block lies inside it and needs no lookup.
        self._span: tuple[Phase, int, float, float] = (Phase.READY, 0, 0.0, -1.0)
        self._origin: int | None = None
        self._hold_run = 0
        self._counted_period = 0
        self._band_entry: dict[int, int] = {}
        self._last_phase = (Phase.READY, 0)
        self.state = ExerciseState(session_left_s=self._total / rate_hz)
        if after is not None:
            self.state.reps_done, self.state.in_band_s = after.reps_done, after.in_band_s
            self._last_phase = (Phase.DONE, -1)  # so the first block emits PhaseChanged(READY)

    @property
    def finished(self) -> bool:
        return self.state.phase is Phase.DONE

    @property
    def periods(self) -> int:
        return int(self._starts.shape[0])

    def work_start_index(self, period: int) -> int | None:
        """Device sample index where work period `period` (1-based) starts; None past the end."""
        if self._origin is None or not 1 <= period <= self.periods:
            return None
        return self._origin + int(self._starts[period - 1])

    def safe_switch_index(self) -> int | None:
        """The first sample outside work from the current state on: the end of the running work
        period, or None when not working (a switch can happen at once)."""
        st = self.state
        if st.phase is not Phase.WORK or self._origin is None or self.free:
            return None
        return self._origin + int(self._starts[st.period - 1]) + self._work

    def pause(self) -> None:
        """A calibration interrupts the exercise: the hold in progress is lost, and the phase
        after `resume` is announced anew."""
        self._hold_run = 0
        self._last_phase = (Phase.CALIBRATING, self.state.period)

    def resume(self, at: int) -> None:
        """Restart the timeline at sample `at` from the start of the rest before the next work
        period (READY when no work period had started): an interrupted work period is lost."""
        st = self.state
        if self.free:  # straight back to work
            self._origin = at - self._ready
            return
        p = st.period if st.phase in (Phase.WORK, Phase.REST) else 0
        rel = int(self._starts[p - 1]) + self._work if p else 0
        self._origin = at - rel

    def _phase_of(self, rel: int) -> tuple[Phase, int]:
        """Phase and 1-based period number of one sample offset from the session start."""
        if rel >= self._total:
            return Phase.DONE, self.periods + 1
        idx = bisect.bisect_right(self._start_list, rel) - 1
        if idx < 0:
            return Phase.READY, 0
        work = rel - self._start_list[idx] < self._work
        return (Phase.WORK if work else Phase.REST), idx + 1

    def _span_of(self, rel: int) -> tuple[Phase, int, float, float]:
        """`_phase_of(rel)` and the offsets [from, to) that share its phase and period."""
        if rel >= self._total:
            return Phase.DONE, self.periods + 1, self._total, math.inf
        idx = bisect.bisect_right(self._start_list, rel) - 1
        if idx < 0:
            return Phase.READY, 0, -math.inf, self._start_list[0]
        start = self._start_list[idx]
        if rel - start < self._work:
            return Phase.WORK, idx + 1, start, start + self._work
        return Phase.REST, idx + 1, start + self._work, self._end_list[idx]

    def _runs(self, rel0: int, in_band: np.ndarray) -> list[tuple[Phase, int, bool, int, int]]:
        """Runs of constant (phase, period, in band) as (phase, period, in band, start, end)."""
        n = in_band.shape[0]
        cuts = set(run_starts(in_band))
        # Where the phase or the period changes, from the timeline's lists: a cue block holds
        # one or two such cuts, and walking them costs less than a phase per sample in numpy.
        s = 0
        while s < n:
            cuts.add(s)
            to = self._span_of(rel0 + s)[3]
            s = n if to >= rel0 + n else int(to) - rel0
        starts = sorted(cuts)
        return [
            (*self._phase_of(rel0 + s), bool(in_band[s]), s, e)
            for s, e in zip(starts, [*starts[1:], n], strict=True)
        ]

    def process(self, first_index: int, zone: np.ndarray) -> ExerciseState:
        if self._origin is None:
            self._origin = first_index
        n = zone.shape[0]
        rel0 = first_index - self._origin
        events: list[ExerciseEvent] = []
        st = self.state
        if n:
            span = self._span
            if not span[2] <= rel0 < span[3]:
                span = self._span = self._span_of(rel0)
            banded = _count_in_band(zone)
            if rel0 + n <= span[3] and (banded == 0 or banded == n):
                # The usual block: one phase, in or out of the band throughout (one run).
                events = self._run(span[0], span[1], banded == n, first_index, n)
                st.phase, st.period = span[0], span[1]
            else:
                # Walk runs of constant (phase, period, in_band): a handful per block at most.
                for phase, period, band, s, e in self._runs(rel0, zone == IN_BAND):
                    events.extend(self._run(phase, period, band, first_index + s, e - s))
                st.phase, st.period = self._phase_of(rel0 + n - 1)
            st.set_no = min(self._sets, max(1, (st.period - 1) // self._reps + 1))
            self._update_clocks(rel0 + n)
        st.holding = st.phase is WORK and int(zone[n - 1]) == IN_BAND if n else False
        working = st.phase is WORK and not self.free
        st.hold_progress = min(1.0, self._hold_run / self._hold) if working else 0.0
        st.events = events
        return st

    def _run(
        self, phase: Phase, period: int, in_band: bool, at: int, length: int
    ) -> list[ExerciseEvent]:
        events: list[ExerciseEvent] = []
        if (phase, period) != self._last_phase:
            self._last_phase = (phase, period)
            self._hold_run = 0
            events.append(PhaseChanged(phase, period, at))
        if phase is not WORK:
            return events
        if not in_band:
            self._hold_run = 0
            return events
        self._band_entry.setdefault(period, at)
        self.state.in_band_s += length / self.rate_hz
        needed = self._hold - self._hold_run
        self._hold_run += length
        if self._counted_period != period and length >= needed and not self.free:
            self._counted_period = period
            self.state.reps_done += 1
            work_start = self.work_start_index(period)
            assert work_start is not None
            entry = self._band_entry[period]
            events.append(
                RepCompleted(
                    self.state.reps_done,
                    at + needed,
                    (entry - work_start) / self.rate_hz,
                    period,
                )
            )
        return events

    def _update_clocks(self, rel_next: int) -> None:
        st = self.state
        if self.free:  # no session end and, once working, no countdown
            st.session_left_s = 0.0
            st.phase_left_s = max(0, self._ready - rel_next) / self.rate_hz
            return
        st.session_left_s = max(0, self._total - rel_next) / self.rate_hz
        if st.phase is READY:
            left = self._ready - rel_next
        elif st.phase is DONE:
            left = 0
        else:
            p = st.period - 1
            work_end = self._start_list[p] + self._work
            left = work_end - rel_next if st.phase is WORK else self._end_list[p] - rel_next
        st.phase_left_s = max(0, left) / self.rate_hz
