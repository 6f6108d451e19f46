"""The protocol state machine driven by scripted zones."""

from __future__ import annotations

import numpy as np

from config.loader import load_settings
from feedback.exercise import Exercise, Phase, PhaseChanged, RepCompleted
from feedback.processing.activation import Zone

RATE = 1000.0


def protocol(**kw: object) -> Exercise:
    overrides = {f"protocol.{k}": v for k, v in kw.items()}
    return Exercise(load_settings(environ={}, overrides=overrides).protocol, RATE)


def scripted_zones(total: int, in_band: list[tuple[float, float]]) -> np.ndarray:
    z = np.full(total, Zone.BELOW, dtype=np.int8)
    for a, b in in_band:
        z[int(a * RATE) : int(b * RATE)] = Zone.IN_BAND
    return z


def run(ex: Exercise, zones: np.ndarray, sizes: int, first: int = 500) -> list[object]:
    events: list[object] = []
    for start in range(0, zones.shape[0], sizes):
        events.extend(ex.process(first + start, zones[start : start + sizes]).events)
    return events


def test_reps_count_only_held_periods_and_match_for_any_block_size() -> None:
    # ready 1 s, work 5 s, rest 5 s, hold 2 s, 3 reps: work periods at 1–6, 11–16, 21–26 s.
    kw = {"ready_s": 1.0, "work_s": 5.0, "rest_s": 5.0, "hold_s": 2.0, "reps": 3}
    zones = scripted_zones(
        32_000,
        [
            (1.5, 4.0),  # held 2.5 s → rep 1 at 3.5 s
            (11.2, 12.0),
            (12.5, 14.0),  # broken: 0.8 + 1.5 s → no rep
            (21.0, 24.0),
            (27.0, 30.0),
        ],
    )  # rep 3 at 23 s; rest ignored
    results = []
    for size in (1, 7, 20, 1000, 32_000):
        ex = protocol(**kw)
        events = run(ex, zones, size)
        reps = [e for e in events if isinstance(e, RepCompleted)]
        results.append([(r.rep, r.at_index) for r in reps])
        assert ex.finished
        assert ex.state.reps_done == 2
        assert abs(ex.state.in_band_s - (2.5 + 0.8 + 1.5 + 3.0)) < 1e-9
    assert all(r == results[0] for r in results)
    assert results[0] == [(1, 500 + 3500), (2, 500 + 23_000)]


def test_phase_sequence_and_time_to_band() -> None:
    ex = protocol(ready_s=1.0, work_s=3.0, rest_s=2.0, hold_s=1.0, reps=2)
    zones = scripted_zones(11_500, [(1.4, 3.0), (6.2, 8.0)])
    events = run(ex, zones, 50, first=0)
    phases = [(e.phase, e.rep) for e in events if isinstance(e, PhaseChanged)]
    assert phases == [
        (Phase.WORK, 1),
        (Phase.REST, 1),
        (Phase.WORK, 2),
        (Phase.REST, 2),
        (Phase.DONE, 3),
    ]
    reps = [e for e in events if isinstance(e, RepCompleted)]
    assert [round(r.cue_to_band_s or -1, 3) for r in reps] == [0.4, 0.2]


def test_clocks_count_down() -> None:
    ex = protocol(ready_s=1.0, work_s=5.0, rest_s=5.0, reps=2)
    st = ex.process(0, np.zeros(1500, dtype=np.int8))
    assert st.phase is Phase.WORK
    assert abs(st.phase_left_s - 4.5) < 1e-9
    assert abs(st.session_left_s - (21.0 - 1.5)) < 1e-9


def test_free_protocol_has_no_timeline_no_reps_and_never_ends() -> None:
    ex = protocol(kind="free", ready_s=1.0, work_s=5.0, rest_s=5.0, hold_s=2.0, reps=3)
    zones = scripted_zones(60_000, [(2.0, 10.0), (20.0, 30.0)])  # long holds: reps if timed
    events = run(ex, zones, 250)
    assert not [e for e in events if isinstance(e, RepCompleted)]
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases == [Phase.WORK]  # after ready: no rest, no done
    st = ex.state
    assert st.phase is Phase.WORK and not ex.finished and st.reps_done == 0
    assert st.phase_left_s == 0.0 and st.session_left_s == 0.0 and st.hold_progress == 0.0
    assert st.in_band_s == 18.0  # time in the band still counts
    assert ex.safe_switch_index() is None  # a switch from free practice happens at once


def test_free_protocol_resumes_at_work_after_a_calibration() -> None:
    ex = protocol(kind="free", ready_s=1.0)
    ex.process(0, np.zeros(3000, dtype=np.int8))
    ex.pause()
    ex.resume(10_000)
    st = ex.process(10_000, np.zeros(100, dtype=np.int8))
    assert st.phase is Phase.WORK


def test_the_timed_control_counts_reps_on_the_same_zones() -> None:
    """Negative control for the free-protocol test: the same zones do count on a timed one."""
    ex = protocol(ready_s=1.0, work_s=5.0, rest_s=5.0, hold_s=2.0, reps=3)
    zones = scripted_zones(60_000, [(2.0, 10.0), (20.0, 30.0)])
    assert [e for e in run(ex, zones, 250) if isinstance(e, RepCompleted)]


def _reference_runs(ex: Exercise, rel0: int, in_band: np.ndarray) -> list[tuple[object, ...]]:
    """The runs by brute force: every sample's phase and period looked up in numpy, then
    runs of equal (phase, period, in band) (the way `_runs` found them before it walked the
    timeline's cuts)."""
    rel = rel0 + np.arange(in_band.shape[0])
    starts, work = ex._starts, ex._work
    idx = np.searchsorted(starts, rel, side="right") - 1
    into = rel - starts[np.maximum(idx, 0)]
    phase = np.where(into < work, Phase.WORK, Phase.REST)
    phase = np.where(idx < 0, Phase.READY, phase)
    done = rel >= ex._total
    phase = np.where(done, Phase.DONE, phase)
    period = np.where(done, ex.periods + 1, idx + 1)
    key = phase.astype(np.int64) * 1_000_000 + period * 2 + in_band
    cuts = [0, *(np.flatnonzero(key[1:] != key[:-1]) + 1).tolist()]
    return [
        (Phase(int(phase[s])), int(period[s]), bool(in_band[s]), s, e)
        for s, e in zip(cuts, [*cuts[1:], len(key)], strict=True)
    ]


def _random_blocks(seed: int) -> list[tuple[Exercise, int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(300):
        ex = protocol(
            ready_s=float(rng.choice([0.0, 0.5, 1.0])),
            work_s=float(rng.choice([0.6, 1.0, 2.0])),
            rest_s=float(rng.choice([0.0, 0.3, 1.0])),
            hold_s=0.5,
            reps=int(rng.integers(1, 4)),
            sets=int(rng.integers(1, 3)),
            set_rest_s=float(rng.choice([0.0, 2.0])),
            kind=str(rng.choice(["timed", "timed", "free"])),
        )
        n = int(rng.choice([1, 20, 333, 4000]))
        # Near a phase boundary half the time: where the runs are split.
        edge = int(rng.choice(ex._start_list)) + int(
            rng.choice([0, ex._work if not ex.free else 0])
        )
        rel0 = (
            max(0, edge - int(rng.integers(0, n + 1)))
            if rng.random() < 0.5
            else int(rng.integers(0, ex._end_list[-1] + 2000))
        )
        cases.append((ex, rel0, rng.random(n) < rng.random()))
    return cases


def test_a_blocks_runs_agree_with_a_phase_per_sample() -> None:
    for ex, rel0, in_band in _random_blocks(seed=7):
        assert ex._runs(rel0, in_band) == _reference_runs(ex, rel0, in_band), (rel0, len(in_band))


def test_the_runs_check_catches_a_missed_phase_change() -> None:
    # Control: runs cut only where the band changes (no phase or period cut) disagree.
    def band_cuts_only(ex: Exercise, rel0: int, in_band: np.ndarray) -> list[tuple[object, ...]]:
        starts = [0, *(np.flatnonzero(in_band[1:] != in_band[:-1]) + 1).tolist()]
        return [
            (*ex._phase_of(rel0 + s), bool(in_band[s]), s, e)
            for s, e in zip(starts, [*starts[1:], len(in_band)], strict=True)
        ]

    cases = _random_blocks(seed=7)
    assert any(band_cuts_only(*c) != _reference_runs(*c) for c in cases)
