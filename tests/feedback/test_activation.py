"""The amplitude-referenced activation detector, called directly with seeded signals."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from config.loader import load_settings
from config.settings import ActivationSettings, CalibrationSettings
from feedback.processing.activation import ActivationBlock, ActivationDetector
from feedback.processing.onset import OnsetDetector

RATE = 1000.0
CHANNELS = ("VM", "VL")


def envelope(spans: list[tuple[float, float, float]], seconds: float, seed: int = 1) -> np.ndarray:
    """A smooth-looking envelope (mV): rest 5 µV with 20 % jitter, plus (start, end, level)
    plateaus; VL follows VM 30 ms later."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    out = 0.005 * (1 + 0.2 * rng.standard_normal((2, n)))
    for row, delay in ((0, 0.0), (1, 0.03)):
        for a, b, level in spans:
            out[row, round((a + delay) * RATE) : round((b + delay) * RATE)] += level
    return np.abs(out)


def run(
    env: np.ndarray,
    sizes: list[int] | None = None,
    calibration: CalibrationSettings | None = None,
    **overrides: object,
) -> list[ActivationBlock]:
    s = load_settings(environ={}, overrides=overrides)
    det = ActivationDetector(s.activation, RATE, CHANNELS, calibration)
    hb = OnsetDetector(s.onset, RATE, CHANNELS)
    sizes = sizes or [env.shape[1]]
    out, pos = [], 0
    for k in sizes:
        part = env[:, pos : pos + k]
        out.append(det.process(pos, part, hb.process(pos, part)))
        pos += k
    return out


def joined(blocks: list[ActivationBlock]) -> np.ndarray:
    return np.concatenate([b.active for b in blocks], axis=1)


SCRIPT = [(2.0, 4.0, 0.1), (6.0, 8.0, 0.2), (10.0, 12.0, 0.15)]


def test_one_block_equals_one_sample_blocks_and_any_split() -> None:
    env = envelope(SCRIPT, 13.0)
    whole = run(env)
    singles = run(env, [1] * env.shape[1])
    rng = np.random.default_rng(4)
    sizes: list[int] = []
    while sum(sizes) < env.shape[1]:
        sizes.append(int(min(env.shape[1] - sum(sizes), rng.integers(1, 90))))
    mixed = run(env, sizes)
    for other in (singles, mixed):
        np.testing.assert_array_equal(joined(whole), joined(other))
        assert [e for b in other for e in b.events] == list(whole[0].events)
        np.testing.assert_allclose(
            np.concatenate([b.level_pct for b in other], axis=1), whole[0].level_pct
        )
        np.testing.assert_allclose(other[-1].rest_mv, whole[0].rest_mv)
        np.testing.assert_allclose(other[-1].reference_mv, whole[0].reference_mv)


def test_a_block_across_frames_equals_frame_sized_blocks_to_the_bit() -> None:
    """A long block (a replay's) runs the switch once over all its frames; blocks of exactly
    one frame run it frame by frame. The frame sums are over the same samples, so every
    value must be the same to the bit, not merely close."""
    env = envelope(SCRIPT, 13.0)
    frame = round(load_settings(environ={}).activation.frame_ms * RATE / 1000.0)
    whole = run(env)
    framed = run(env, [frame] * -(-env.shape[1] // frame))
    np.testing.assert_array_equal(joined(whole), joined(framed))
    assert [e for b in framed for e in b.events] == list(whole[0].events)
    level = np.concatenate([b.level_pct for b in framed], axis=1)
    assert np.array_equal(level, whole[0].level_pct)
    assert np.array_equal(framed[-1].rest_mv, whole[0].rest_mv)
    assert np.array_equal(framed[-1].reference_mv, whole[0].reference_mv)
    assert np.array_equal(framed[-1].on_mv, whole[0].on_mv)


def test_each_plateau_is_one_activation_with_the_vm_vl_difference() -> None:
    (block,) = run(envelope(SCRIPT, 13.0))
    onsets = [e for e in block.events if e.kind == "onset"]
    vm = [e.at_index for e in onsets if e.channel == "VM"]
    vl = [e.at_index for e in onsets if e.channel == "VL"]
    assert vm == pytest.approx([2000, 6000, 10000], abs=5)
    assert np.subtract(vl, vm) == pytest.approx([30, 30, 30], abs=3)
    assert not block.calibrated.any()  # no calibration: the running session reference


def test_low_level_activity_between_efforts_is_not_activation() -> None:
    """Real recordings: between efforts the envelope wanders at 2–3 × rest. The old rule
    (rest mean + 3 SD) read that as active; the amplitude reference does not."""
    env = envelope([*SCRIPT, (4.5, 5.5, 0.008), (8.5, 9.5, 0.01)], 13.0)
    active = run(env)[0].active[0]
    assert not active[round(4.6 * RATE) : round(5.5 * RATE)].any()
    assert not active[round(8.6 * RATE) : round(9.5 * RATE)].any()
    assert active[round(6.5 * RATE) : round(7.5 * RATE)].all()


def test_a_session_that_starts_mid_contraction_finds_its_rest() -> None:
    """The first 1.5 s are a contraction: its level cannot be rest. Once the muscle relaxes
    the rest level falls to the true rest and later efforts are found."""
    env = envelope([(0.0, 1.5, 0.1), *SCRIPT], 13.0)
    (block,) = run(env)
    vm = [e.at_index / RATE for e in block.events if e.kind == "onset" and e.channel == "VM"]
    assert vm == pytest.approx([2.0, 6.0, 10.0], abs=0.1)
    assert not block.active[:, : round(1.5 * RATE)].any()  # no onset seen: not judged
    assert block.rest_mv[0] == pytest.approx(0.005, rel=0.3)


def test_a_hold_shorter_than_the_rest_window_stays_active() -> None:
    env = envelope([(2.0, 14.0, 0.1)], 16.0)
    active = run(env)[0].active[0]
    assert active[round(2.1 * RATE) : round(14.0 * RATE)].all()


def test_calibrated_reference_only_from_a_measured_calibration() -> None:
    configured = CalibrationSettings()  # the default 0.5 mV placeholder: no calibration
    assert not run(envelope(SCRIPT, 3.0), calibration=configured)[-1].calibrated.any()
    measured = CalibrationSettings(
        mvc_mv={"VM": 0.4, "VL": 0.4},
        rest_mv={"VM": 0.005, "VL": 0.005},
        rest_sd_mv={"VM": 0.001, "VL": 0.001},
    )
    (block,) = run(envelope(SCRIPT, 13.0), calibration=measured)
    assert block.calibrated.all()
    np.testing.assert_allclose(block.reference_mv, 0.4)
    # 20 % of (MVC − rest) above rest: the 0.1 mV plateau (24 % MVC) counts, and it reads so.
    assert block.active[0, 3000] and block.level_pct[0, 3000] == pytest.approx(24, abs=2)
    trusted = run(envelope(SCRIPT, 3.0), calibration=configured, **{"activation.reference": "mvc"})
    assert trusted[-1].calibrated.all()
    session = run(
        envelope(SCRIPT, 3.0), calibration=measured, **{"activation.reference": "session"}
    )
    assert not session[-1].calibrated.any()


def test_weak_efforts_under_the_calibrated_level_are_not_active() -> None:
    measured = CalibrationSettings(
        mvc_mv={"VM": 1.0, "VL": 1.0},
        rest_mv={"VM": 0.005, "VL": 0.005},
        rest_sd_mv={"VM": 0.001, "VL": 0.001},
    )
    (block,) = run(envelope([(2.0, 4.0, 0.1)], 6.0), calibration=measured)  # 10 % MVC
    assert not block.active.any()


def test_a_gap_restarts_inactive() -> None:
    s = load_settings(environ={})
    det = ActivationDetector(s.activation, RATE, CHANNELS)
    env = envelope(SCRIPT, 13.0)
    before = det.process(0, env[:, :3000])
    assert before.active[:, -1].all()
    det.gap(100)
    after = det.process(5000, env[:, 3000:3500])
    assert not after.active[:, :100].any()


def test_settings_need_hysteresis() -> None:
    with pytest.raises(ValidationError, match="hysteresis"):
        ActivationSettings(on_fraction=0.1, off_fraction=0.2)
    with pytest.raises(ValidationError, match="hysteresis"):
        ActivationSettings(on_rest_ratio=2.0, off_rest_ratio=3.0)
    with pytest.raises(ValidationError):
        ActivationSettings(on_fraction=1.5)
