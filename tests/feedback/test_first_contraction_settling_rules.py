"""What settling the first contraction keeps, which contraction it applies to, and what it says.

The review of the settled first contraction (feedback/processing/contraction_counter.py) found:
the settled contraction lost its VM–VL onset difference when settling moved its start by more
than the pair window (the effort's VM onset precedes the switch-on); every block it held kept
every channel of the step's per-block arrays alive, and a calibrated session held them too;
any contraction counted first was settled, even after a blip or a contraction lost to a gap
had set the reference; a first contraction that could not be settled gave no sign. Each test
has its wrong variant, the behaviour before, shown failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from config.loader import load_settings
from config.settings import CalibrationSettings, Settings
from devices.base import SampleBlock
from feedback.contraction_report import contraction_metrics
from feedback.pipeline import Pipeline
from feedback.processing.contraction_counter import ContractionCounter, CounterInput
from feedback.processing.metrics import Contraction
from firmware_bridge.synthetic_emg import ChannelModel, ContractionProfile, SyntheticEmg

RATE = 1000.0  # the counter's unit tests: 1 sample a millisecond
SWITCH_ON = 1000  # where the unit tests' first contraction switches on
LOW, HIGH = 0.01, 0.1  # on levels (mV): before any effort, and once the reference has seen it


def count_zero_rule(self: ContractionCounter, start: int) -> bool:
    """The rule before: settle whatever contraction is counted first."""
    level = self._settle_level
    return self.count == 0 and level is not None and level(start) is not None


def effort(n: int, on: int, off: int, ramp: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Active over [on, off), its envelope rising from LOW to 2 × HIGH over `ramp` samples."""
    active = np.zeros(n, bool)
    active[on:off] = True
    env = np.full(n, LOW / 2)
    env[on:off] = np.minimum(LOW + (2 * HIGH - LOW) * np.arange(off - on) / ramp, 2 * HIGH)
    return active, env


def stepped(high_from: int) -> Callable[[int], float | None]:
    """On levels as an uncalibrated session has them: the rest multiple until the effort."""
    return lambda index: LOW if index < high_from else HIGH


def run(
    active: np.ndarray,
    env: np.ndarray,
    level: Callable[[int], float | None] | None,
    *,
    onsets: tuple[tuple[str, int], ...] = (),
    gap_at: int | None = None,
    block: int = 20,
    rate: float = RATE,
) -> tuple[list[Contraction], ContractionCounter]:
    """VM (the target) and VL, VL at half the envelope; `gap_at`: samples lost there."""
    rows = np.vstack([env, env / 2])
    counter = ContractionCounter(rate, ("VM", "VL"), "VM", calibrated=False, settle_level=level)
    found: list[Contraction] = []
    for a in range(0, active.shape[0], block):
        sl = slice(a, a + block)
        mine = tuple(o for o in onsets if a <= o[1] < a + block)
        found += counter.process(
            CounterInput(a, active[sl], rows[:, sl], rows[:, sl] * 100, rows[:, sl], None, mine)
        )
        if gap_at is not None and a <= gap_at < a + block:
            counter.gap()
    return found + counter.finish(), counter


# 1. The VM–VL onset difference of a settled contraction is its switch-on's.


@pytest.mark.parametrize("variant", ["correct", "paired-at-settled-start"])
def test_a_settled_contraction_keeps_its_switch_on_pairing(variant: str) -> None:
    """Settling moves the start 474 ms (past the 300 ms pair window); the VM onset sits 20 ms
    before the switch-on, VL 30 ms after VM."""
    active, env = effort(5000, SWITCH_ON, 3000)
    onsets = (("VM", SWITCH_ON - 20), ("VL", SWITCH_ON + 10))
    (plain,), _ = run(active, env, None, onsets=onsets)
    (settled,), counter = run(active, env, stepped(2000), onsets=onsets)
    assert plain.vm_vl_onset_ms == 30.0 and settled.onset_index - SWITCH_ON > 300
    got = settled.vm_vl_onset_ms
    if variant == "paired-at-settled-start":  # what pairing from the settled start gives
        vm, vl = counter._pair(settled.onset_index, settled.offset_index)
        got = None if vm is None or vl is None else vl - vm
    assert (got == plain.vm_vl_onset_ms) is (variant == "correct"), got


def simulated_vm_vl(seconds: float, ramp_s: float, channels: tuple[str, ...]) -> np.ndarray:
    profile = ContractionProfile(
        first_rest_s=2.0, contract_s=5.0, relax_s=3.0, ramp_s=ramp_s, level=0.3
    )
    models = tuple(
        ChannelModel(ch, 0.5, onset_delay_s=0.03 if ch == "VL" else 0.0) for ch in channels
    )
    source = SyntheticEmg(2000.0, models, profile, baseline_noise_mv=0.005, seed=1)
    return np.asarray(source(round(seconds * 2000.0)), np.float32)


def uncalibrated() -> Settings:
    s = load_settings(environ={})
    return s.model_copy(
        update={"calibration": CalibrationSettings(mvc_mv={}, source="placeholder")}
    )


def calibrated() -> Settings:
    cal = CalibrationSettings(
        mvc_mv={"VM": 0.5, "VL": 0.5},
        rest_mv={"VM": 0.005, "VL": 0.005},
        rest_sd_mv={"VM": 0.002, "VL": 0.002},
        source="guided",
    )
    return load_settings(environ={}).model_copy(update={"calibration": cal})


def stream(
    settings: Settings, data: np.ndarray, channels: tuple[str, ...], watch: list[int] | None = None
) -> tuple[list[Contraction], Pipeline]:
    """The session pipeline in 20-sample blocks; `watch` gets the counter's kept bytes and
    held samples after each block, as pairs."""
    pipe = Pipeline(settings, 2000.0, channels)
    found: list[Contraction] = []
    for a in range(0, data.shape[1], 20):
        block = SampleBlock(a, a / 2000.0, 2000.0, channels, data[:, a : a + 20])
        found += pipe.process(block).contractions
        if watch is not None and pipe.counter.kept_bytes:
            watch += [pipe.counter.kept_bytes, pipe.counter._held_n]
    return found + pipe.finish(), pipe


@pytest.mark.parametrize("variant", ["correct", "paired-at-settled-start"])
def test_a_slow_first_effort_on_the_simulator_keeps_its_vm_vl_onset_difference(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncalibrated, a 2 s ramp: settling moves the first start by more than 300 ms; its VM–VL
    onset difference is the one the unsettled contraction had (the simulator's VL follows VM
    by 30 ms)."""
    channels = ("VM", "VL")
    data = simulated_vm_vl(9.0, 2.0, channels)
    with monkeypatch.context() as m:
        m.setattr(Pipeline, "_settling_level", lambda self, index: None)
        (plain,), _ = stream(uncalibrated(), data, channels)
    (first,), pipe = stream(uncalibrated(), data, channels)
    assert first.settled is True and first.onset_index - plain.onset_index > 600
    got = first.vm_vl_onset_ms
    if variant == "paired-at-settled-start":
        vm, vl = pipe.counter._pair(first.onset_index, first.offset_index)
        got = None if vm is None or vl is None else (vl - vm) / 2.0
    ok = plain.vm_vl_onset_ms is not None and got == plain.vm_vl_onset_ms
    assert ok is (variant == "correct"), (got, plain.vm_vl_onset_ms)


# 2. What settling keeps: copies of the rows it reads, and nothing when it cannot apply.

# Per held sample: the target's and VL's envelope, the target's % MVC and filtered EMG (float64),
# its activation (bool) and its zone (int8).
BYTES_PER_SAMPLE = 4 * 8 + 1 + 1


@pytest.mark.parametrize("variant", ["correct", "keep-everything"])
def test_an_uncalibrated_session_keeps_only_the_rows_settling_reads(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if variant == "keep-everything":  # the blocks as given: views of every channel's arrays
        monkeypatch.setattr(ContractionCounter, "_rows_of", lambda self, b: b)
    channels = ("VM", "VL", "RF", "BF")
    watch: list[int] = []
    (first,), _ = stream(uncalibrated(), simulated_vm_vl(9.0, 0.3, channels), channels, watch)
    assert first.settled is True and watch
    kept, held = watch[0::2], watch[1::2]
    ok = all(k <= n * BYTES_PER_SAMPLE for k, n in zip(kept, held, strict=True))
    assert ok is (variant == "correct"), max(k / n for k, n in zip(kept, held, strict=True))


@pytest.mark.parametrize("variant", ["correct", "count-zero-rule"])
def test_a_calibrated_session_keeps_nothing(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if variant == "count-zero-rule":  # held while the first contraction is open, decided at close
        monkeypatch.setattr(
            ContractionCounter,
            "_settles",
            lambda self, start: self.count == 0 and self._settle_level is not None,
        )
    channels = ("VM", "VL")
    watch: list[int] = []
    (first,), _ = stream(calibrated(), simulated_vm_vl(9.0, 0.3, channels), channels, watch)
    ok = not watch and first.settled is None
    assert ok is (variant == "correct"), (watch[:2], first.settled)


# 3. Only the session's first activation of the target is settled.


@pytest.mark.parametrize("variant", ["correct", "count-zero-rule"])
@pytest.mark.parametrize("before", ["blip", "gap"])
def test_after_a_blip_or_a_lost_contraction_the_next_is_not_settled(
    before: str, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200 ms blip (too short to count), or a contraction dropped by a gap, set the session
    reference: the on level is HIGH from then on, so the next switch-on was judged against it
    and its start stands. (The levels step from LOW to HIGH at the end of that first effort.)"""
    if variant == "count-zero-rule":
        monkeypatch.setattr(ContractionCounter, "_settles", count_zero_rule)
    active, env = effort(9000, 4000, 6000)
    if before == "blip":
        active[1000:1200], env[1000:1200] = True, 2 * HIGH
        (c,), _ = run(active, env, stepped(1200))
    else:  # lost in its dip, before the dip had ended it
        active[1000:1600], env[1000:1600] = True, 2 * HIGH
        (c,), _ = run(active, env, stepped(1600), gap_at=1600)
    ok = c.onset_index == 4000 and c.settled is None
    assert ok is (variant == "correct"), (c.onset_index, c.settled)


def test_the_first_effort_is_settled() -> None:
    """The same effort with nothing before it: settled (the rule above does not stop it)."""
    active, env = effort(9000, 4000, 6000)
    (c,), _ = run(active, env, stepped(5000))
    assert c.settled is True and c.onset_index == 4000 + int(np.argmax(env[4000:] >= HIGH)) > 4000


# 4. A first contraction that could not be settled says so.


HOLD = ContractionCounter._hold


def forgetting_hold(self: ContractionCounter, block: CounterInput) -> None:
    """The hold before: past MAX_CONTRACTION_S it dropped the blocks and, with them, any sign."""
    HOLD(self, block)
    if self._held is None:
        self._settling = False


@pytest.mark.parametrize("variant", ["correct", "silent"])
@pytest.mark.parametrize("case", ["longer-than-60-s", "level-unknown"])
def test_a_first_contraction_that_could_not_be_settled_says_so(
    case: str, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rate = 100.0  # (61 s in few samples)
    n = round(70 * rate)
    active, env = effort(n, 100, n - 500, ramp=100)
    level = stepped(200)
    if case == "longer-than-60-s":
        active[100 : round(61.5 * rate)] = True
        active[round(61.5 * rate) :] = False
        if variant == "silent":
            monkeypatch.setattr(ContractionCounter, "_hold", forgetting_hold)
    else:
        active[round(10 * rate) :] = False
        level = lambda index: LOW if index < 200 else None  # noqa: E731 (the level history gone)
        if variant == "silent":  # an unknown level taken as the start confirmed
            monkeypatch.setattr(
                ContractionCounter, "_settled_start", lambda self, held, start, end, at: start
            )
    (c,), _ = run(active, env, level, rate=rate)
    assert c.onset_index == 100  # the live switch-on either way
    assert (c.settled is False) is (variant == "correct"), c.settled
    assert contraction_metrics(c)["settled"] is c.settled  # in every output's figures


def test_a_settled_contraction_reads_as_such_and_others_as_nothing_to_settle() -> None:
    active, env = effort(12000, SWITCH_ON, 3000)
    later, later_env = effort(12000, 6000, 8000)
    (first, second), _ = run(active | later, np.maximum(env, later_env), stepped(2000))
    assert [first.settled, second.settled] == [True, None]
    assert [contraction_metrics(c)["settled"] for c in (first, second)] == [True, None]
    assert replace(first, settled=None) != first
