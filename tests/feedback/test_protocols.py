"""Protocols as data: the shipped files, sets × reps, progression, and --protocol."""

from __future__ import annotations

import numpy as np
import pytest

from config.loader import ConfigError, load_settings
from config.protocols import available_protocols, load_protocol, prescribed_reps
from devices.base import SampleBlock
from feedback.cli import main
from feedback.exercise import Exercise, Phase, PhaseChanged, RepCompleted
from feedback.pipeline import Pipeline
from feedback.processing.activation import Zone

SHIPPED = [
    "mini-squat",
    "quad-sets",
    "step-up-down",
    "straight-leg-raise",
    "terminal-knee-extension",
]


def test_the_five_quadriceps_protocols_ship_and_validate() -> None:
    assert available_protocols() == sorted([*SHIPPED, "free"])
    for name in SHIPPED:
        protocol, target = load_protocol(name)
        assert protocol.name == name and protocol.sets >= 1 and protocol.title
        assert protocol.progression.after_reps > 0
        assert target.low_pct < target.high_pct
        s = load_settings(environ={}, protocol=name)
        assert s.protocol == protocol and (s.target.low_pct, s.target.high_pct) == (
            target.low_pct,
            target.high_pct,
        )


def test_free_practice_ships_without_timing_or_reps() -> None:
    protocol, _ = load_protocol("free")
    assert protocol.kind == "free" and protocol.title
    assert prescribed_reps(protocol) == 0
    assert all(prescribed_reps(load_protocol(n)[0]) > 0 for n in SHIPPED)
    s = load_settings(environ={}, protocol="free")
    assert s.protocol.kind == "free"


def test_environment_still_overrides_a_protocol() -> None:
    s = load_settings(environ={"VMF_PROTOCOL__REPS": "4"}, protocol="mini-squat")
    assert s.protocol.reps == 4 and s.protocol.name == "mini-squat"


def test_unknown_protocol_names_the_choices() -> None:
    choices = "unknown protocol 'leg-day'; available: free, mini-squat"
    with pytest.raises(ConfigError, match=choices):
        load_settings(environ={}, protocol="leg-day")
    assert main(["--protocol", "leg-day", "--headless"]) == 2


RATE = 100.0


def exercise(**kw: object) -> Exercise:
    overrides = {f"protocol.{k}": v for k, v in kw.items()}
    return Exercise(load_settings(environ={}, overrides=overrides).protocol, RATE)


def test_sets_with_a_longer_rest_between_them_for_any_block_split() -> None:
    # ready 1, work 2, rest 1, 2 reps × 2 sets, set rest 3: work at 1–3, 4–6, 9–11, 12–14 s.
    kw = {"ready_s": 1, "work_s": 2, "rest_s": 1, "hold_s": 1, "reps": 2, "sets": 2}
    zones = np.full(1600, Zone.IN_BAND, dtype=np.int8)
    results = []
    for size in (1, 7, 50, 1600):
        ex = exercise(set_rest_s=3, **kw)
        events: list[object] = []
        sets_seen = set()
        for start in range(0, 1600, size):
            st = ex.process(start, zones[start : start + size])
            events.extend(st.events)
            sets_seen.add((st.phase, st.set_no))
        works = [
            e.at_index for e in events if isinstance(e, PhaseChanged) and e.phase is Phase.WORK
        ]
        reps = [(e.rep, e.at_index, e.period) for e in events if isinstance(e, RepCompleted)]
        results.append((works, reps))
        assert ex.finished and ((Phase.WORK, 2) in sets_seen or size == 1600)
    assert all(r == results[0] for r in results)
    assert results[0][0] == [100, 400, 900, 1200]
    assert results[0][1] == [(1, 200, 1), (2, 500, 2), (3, 1000, 3), (4, 1300, 4)]


def test_clock_counts_down_through_the_set_rest() -> None:
    ex = exercise(ready_s=1, work_s=2, rest_s=1, hold_s=1, reps=2, sets=2, set_rest_s=3)
    st = ex.process(0, np.zeros(700, dtype=np.int8))  # 7.0 s: in the set rest (6–9 s)
    assert st.phase is Phase.REST and abs(st.phase_left_s - 2.0) < 1e-9
    assert abs(st.session_left_s - 8.0) < 1e-9


# -- progression through the real pipeline --------------------------------------------------

PIPE_RATE = 1000.0


def progression_settings() -> object:
    return load_settings(
        environ={},
        overrides={
            "protocol.ready_s": 0.5,
            "protocol.work_s": 2.0,
            "protocol.hold_s": 1.0,
            "protocol.rest_s": 1.0,
            "protocol.reps": 4,
            "protocol.progression.after_reps": 2,
            "protocol.progression.step_pct": 15.0,
            "target.low_pct": 20.0,
            "target.high_pct": 60.0,
            "simulator.rate_hz": PIPE_RATE,
        },
    )


def emg(seconds: float) -> np.ndarray:
    """Steady activation of about 30 % MVC: inside 20–60, below the raised 35–75."""
    rng = np.random.default_rng(7)
    return (rng.standard_normal((2, int(seconds * PIPE_RATE))) * 0.17).astype(np.float32)


def run_pipeline(data: np.ndarray, size: int) -> tuple[list[object], np.ndarray, list[object]]:
    pipe = Pipeline(progression_settings(), PIPE_RATE, ("VM", "VL"))  # type: ignore[arg-type]
    reps, zones, raised = [], [], []
    for start in range(0, data.shape[1], size):
        tick = pipe.process(
            SampleBlock(start, 0.0, PIPE_RATE, ("VM", "VL"), data[:, start : start + size])
        )
        reps += [e for e in tick.exercise.events if isinstance(e, RepCompleted)]
        raised += list(tick.band_raised)
        zones.append(tick.zone)
    return reps, np.concatenate(zones), raised


def test_band_rises_after_n_reps_in_a_row_at_the_next_work_start() -> None:
    data = emg(12.5)
    reps, zones, raised = run_pipeline(data, 20)
    assert [r.period for r in reps] == [1, 2]  # periods 3 and 4 are below the raised band
    assert [(b.low_pct, b.high_pct, b.from_index, b.after_rep) for b in raised] == [
        (35.0, 75.0, 6500, 2)
    ]
    assert (zones[3000:6500] == Zone.IN_BAND).mean() > 0.9  # a rest in the old band...
    assert (zones[6600:8500] == Zone.BELOW).mean() > 0.9  # ...and the next work below the new one
    # Exact for any block shorter than rep → next work start (blocks are at most 100 ms).
    for size in (1, 13, 500, 1000):
        r2, z2, b2 = run_pipeline(data, size)
        assert [(r.rep, r.at_index) for r in r2] == [(r.rep, r.at_index) for r in reps]
        assert b2 == raised
        np.testing.assert_array_equal(z2, zones)


async def first_rep_at_s(name: str) -> tuple[float | None, float]:
    """Run protocol `name` on `sim?speed=max` through its first set; the time of its first rep
    (None: none in the set) and the set's length."""
    from devices.registry import open_device

    s = load_settings(environ={}, protocol=name)
    p = s.protocol
    set_s = p.ready_s + p.reps * (p.work_s + p.rest_s)
    device = open_device("sim?speed=max", s)
    async with device:
        pipe = Pipeline(s, device.info.rate_hz, device.info.channels)
        async for block in device.blocks():
            state = pipe.process(block).exercise
            if state.reps_done:
                return block.end_index / device.info.rate_hz, set_s
            if block.end_index >= set_s * device.info.rate_hz:
                return None, set_s
    raise AssertionError("the simulator ended")


@pytest.mark.parametrize("name", SHIPPED)
async def test_the_simulated_patient_follows_every_shipped_protocol(name: str) -> None:
    at, set_s = await first_rep_at_s(name)
    assert at is not None, f"{name}: no rep in the first set ({set_s:.0f} s)"
    p = load_settings(environ={}, protocol=name).protocol
    assert at < p.ready_s + p.work_s + 0.1  # the very first work period already gives a rep


def test_simulator_script_follows_sets_unless_scripted_by_hand() -> None:
    from firmware_bridge.synthetic_emg import ContractionProfile

    # ready 1, work 2, rest 1, 2 reps × 2 sets, set rest 3: work at 1–3, 4–6, 9–11, 12–14 s.
    kw = {"ready_s": 1, "work_s": 2, "rest_s": 1, "hold_s": 1, "reps": 2, "sets": 2}
    overrides = {f"protocol.{k}": v for k, v in kw.items()} | {"protocol.set_rest_s": 3}
    sim = load_settings(environ={}, overrides=overrides).simulator
    assert sim.contraction_pct == 45.0  # centre of the default 30–60 % band
    profile = ContractionProfile(
        sim.first_rest_s, sim.contract_s, sim.relax_s, 0.0, 1.0, sim.reps_per_set, sim.set_rest_s
    )
    t = np.arange(0, 16, 0.01)
    on = profile.drive(t) > 0
    edges = t[1:][on[1:] != on[:-1]]
    assert np.allclose(edges, [1.3, 3, 4.3, 6, 9.3, 11, 12.3, 14], atol=0.011)
    # One timing key set by hand: the whole timing stays the user's; the level still follows.
    hand = load_settings(environ={"VMF_SIMULATOR__CONTRACT_S": "2.5"}, overrides=overrides)
    assert (hand.simulator.contract_s, hand.simulator.relax_s) == (2.5, 6.0)
    assert hand.simulator.reps_per_set == 0 and hand.simulator.contraction_pct == 45.0
