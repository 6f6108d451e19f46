"""Quality flags, Hodges-Bui onsets, per-contraction metrics and the whole Pipeline, called
directly with seeded signals whose truth is known (Timeflux style, no I/O)."""

from __future__ import annotations

from dataclasses import astuple

import numpy as np
import pytest

from config.loader import load_settings
from config.settings import Settings
from devices.base import SampleBlock
from feedback.pipeline import Pipeline, Tick
from feedback.processing.metrics import Contraction, limb_symmetry_index, median_frequency
from feedback.processing.quality import Flag, SignalQuality
from firmware_bridge.synthetic_emg import ChannelModel, ContractionProfile, SyntheticEmg

RATE = 2000.0
# One contraction's VL−VM onset difference scatters with the noise. Over 240 simulated
# contractions (60 seeds, 30 ms scripted) the muscle-shaped carrier gives |error| p95 5.5 ms,
# p99 7 ms, max 9 ms (the old flat 20–450 Hz carrier: 5, 6, 8 ms), and a run's mean over its
# contractions stays within 4.2 ms of the script (flat: 3.8 ms).
ONSET_DIFF_MS = 10.0  # one contraction
ONSET_DIFF_MEAN_MS = 5.0  # the mean of a run's (four or more) contractions


def synthetic(
    seconds: float,
    *,
    roles: tuple[str, ...] = ("VM", "VL"),
    vl_delay_ms: float = 30.0,
    gains: dict[str, float] | None = None,
    level: float = 0.45,
    seed: int = 5,
    first_rest_s: float = 2.0,
    relax_s: float = 3.0,
) -> np.ndarray:
    gains = gains or {}
    models = tuple(
        ChannelModel(
            r,
            0.5,
            onset_delay_s=vl_delay_ms / 1000.0 if r.startswith("VL") else 0.0,
            gain=gains.get(r, 1.0),
        )
        for r in roles
    )
    profile = ContractionProfile(
        first_rest_s=first_rest_s, contract_s=3.0, relax_s=relax_s, ramp_s=0.05, level=level
    )
    src = SyntheticEmg(RATE, models, profile, baseline_noise_mv=0.005, seed=seed)
    return np.asarray(src(int(seconds * RATE)), dtype=np.float32)


def assert_onset_differences(contractions: list[Contraction], scripted_ms: float) -> None:
    diffs = [c.vm_vl_onset_ms for c in contractions]
    assert diffs and all(d is not None for d in diffs), diffs
    found = [d for d in diffs if d is not None]
    assert all(abs(d - scripted_ms) <= ONSET_DIFF_MS for d in found), found
    assert abs(float(np.mean(found)) - scripted_ms) <= ONSET_DIFF_MEAN_MS, found


def run(
    settings: Settings, data: np.ndarray, sizes: list[int], roles: tuple[str, ...] = ("VM", "VL")
) -> list[Tick]:
    pipe = Pipeline(settings, RATE, roles)
    out, start = [], 0
    for n in sizes:
        out.append(
            pipe.process(SampleBlock(start, start / RATE, RATE, roles, data[:, start : start + n]))
        )
        start += n
    return out


def random_split(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while n:
        k = int(min(n, rng.integers(1, 80)))
        sizes.append(k)
        n -= k
    return sizes


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"processing.tkeo": True},
        {"target.mode": "onset", "processing.envelope": "lowpass"},
        {"target.min_on_ms": 100, "target.min_off_ms": 200, "processing.notch_hz": 50},
    ],
)
def test_pipeline_gives_the_same_answer_for_any_block_split(overrides: dict[str, object]) -> None:
    s = load_settings(environ={}, overrides=overrides)
    data = synthetic(14.0)
    data[0, 17000:19000] = 0.0  # an electrode-off stretch, so quality flags change too
    whole = run(s, data, [data.shape[1]])
    parts = run(s, data, random_split(data.shape[1], 11))
    np.testing.assert_array_equal(np.concatenate([t.zone for t in parts]), whole[0].zone)
    for name in ("active",):
        joined = np.concatenate([getattr(t.onsets, name) for t in parts], axis=1)
        np.testing.assert_array_equal(joined, getattr(whole[0].onsets, name))
    joined_q = np.concatenate([t.quality.flags for t in parts if t.quality], axis=1)
    assert whole[0].quality is not None
    np.testing.assert_array_equal(joined_q, whole[0].quality.flags)
    ev_parts = [e for t in parts if t.onsets for e in t.onsets.events]
    assert whole[0].onsets is not None
    assert ev_parts == list(whole[0].onsets.events)
    c_parts = [astuple(c) for t in parts for c in t.contractions]
    c_whole = [astuple(c) for c in whole[0].contractions]
    assert len(c_whole) >= 1
    assert len(c_parts) == len(c_whole)
    for a, b in zip(c_parts, c_whole, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x == (pytest.approx(y, rel=1e-9) if isinstance(y, float) else y)


def test_contractions_match_the_script_and_recover_the_vm_vl_delay() -> None:
    s = load_settings(environ={})
    data = synthetic(26.0, vl_delay_ms=30.0)
    ticks = run(s, data, [40] * (data.shape[1] // 40))
    contractions = [c for t in ticks for c in t.contractions]
    # Script: contractions start at 2, 8, 14, 20 s and last 3 s.
    assert [round(c.onset_index / RATE) for c in contractions] == [2, 8, 14, 20]
    for c in contractions:
        assert c.duration_s == pytest.approx(3.0, abs=0.25)
        assert c.vm_vl_ratio == pytest.approx(1.0, abs=0.1)
        assert 35.0 < c.mean_pct < 47.0  # the script's plateau is 45 % MVC, ramps below
        assert c.time_to_band_s is not None and 0.0 < c.time_to_band_s < 0.2
        assert c.hold_in_band_s == pytest.approx(2.9, abs=0.2)
        assert c.relaxation_s is not None and 0.0 < c.relaxation_s < 0.3
        assert c.median_freq_hz is not None and 60.0 < c.median_freq_hz < 130.0  # a muscle's
    assert_onset_differences(contractions, 30.0)


def test_a_first_rest_shorter_than_the_baseline_window_still_gives_every_onset() -> None:
    """The uncalibrated baseline is learnt from the first `baseline_s` (1 s); here the patient
    contracts after 0.7 s and rests only 1.2 s between contractions. The part of the window
    the contraction reaches into is left out of the rest figures, so the threshold stays at
    rest level, and every contraction is found with the scripted VM–VL delay: the activation's
    rest level is learnt frame by frame (50 ms), so even the first contraction, 0.7 s in, is
    judged. Before, this window set the threshold at contraction level: fragments and
    differences of ±200 ms."""
    s = load_settings(environ={})
    # 26 s: the last contraction (21.7–24.7 s) is counted once its dip has lasted 0.3 s.
    data = synthetic(26.0, vl_delay_ms=30.0, first_rest_s=0.7, relax_s=1.2)
    ticks = run(s, data, [20] * (data.shape[1] // 20))
    contractions = [c for t in ticks for c in t.contractions]
    # Script: contractions start at 0.7 + 4.2 k s (3 s work, 1.2 s rest).
    starts = [0.7 + 4.2 * k for k in range(6)]
    assert [c.onset_index / RATE for c in contractions] == pytest.approx(starts, abs=0.1)
    assert all(c.duration_s == pytest.approx(3.0, abs=0.25) for c in contractions)
    assert_onset_differences(contractions, 30.0)


@pytest.mark.parametrize(("zeros_s", "starts"), [(0.6, [2, 8, 14, 20]), (1.5, [2, 8, 14, 20])])
def test_leads_settling_at_zero_do_not_make_a_zero_threshold(
    zeros_s: float, starts: list[int]
) -> None:
    """The amplifier sends exact zeros while its leads settle. Quality flags them flat (and
    holds the flag 0.5 s), and flat samples are no rest: the baseline is learnt from the
    first window that is mostly usable. After 0.6 s of zeros that is the second (1–2 s), in
    time for the contraction at 2 s. After 1.5 s the activation's rest level comes from the
    first mostly usable 50 ms frame, still in time for it. Before, the zeros made a threshold
    of 0 that held the channel on for the whole session, without an onset."""
    s = load_settings(environ={})
    data = synthetic(26.0, vl_delay_ms=30.0)
    data[:, : round(zeros_s * RATE)] = 0.0
    ticks = run(s, data, [20] * (data.shape[1] // 20))
    contractions = [c for t in ticks for c in t.contractions]
    assert [round(c.onset_index / RATE) for c in contractions] == starts
    assert_onset_differences(contractions, 30.0)
    active = np.concatenate([t.onsets.active for t in ticks if t.onsets is not None], axis=1)
    assert not active[:, round(17.5 * RATE) : round(19.5 * RATE)].any()  # relaxed between


def test_vl_leading_gives_a_negative_onset_difference() -> None:
    s = load_settings(environ={})
    data = synthetic(26.0, vl_delay_ms=-40.0)  # four contractions for the mean
    contractions = [c for t in run(s, data, [20] * 2600) for c in t.contractions]
    assert_onset_differences(contractions, -40.0)


def test_vm_only_has_no_ratio_and_no_onset_difference() -> None:
    s = load_settings(environ={})
    data = synthetic(8.0, roles=("VM",))
    ticks = run(s, data, [20] * 800, roles=("VM",))
    assert all(t.vm_vl_ratio is None for t in ticks)
    contractions = [c for t in ticks for c in t.contractions]
    assert contractions and all(c.vm_vl_onset_ms is None for c in contractions)


def test_median_frequency_of_a_tone_and_of_band_noise() -> None:
    t = np.arange(4000) / RATE
    assert median_frequency(np.sin(2 * np.pi * 90 * t), RATE) == pytest.approx(90, abs=5)
    assert median_frequency(np.zeros(10), RATE) is None


def test_limb_symmetry_index_in_bilateral_mode() -> None:
    s = load_settings(environ={}, overrides={"session.side": "left"})
    roles = ("VM_L", "VM_R")
    s = s.model_copy(
        update={
            "calibration": s.calibration.model_copy(update={"mvc_mv": {"VM_L": 0.5, "VM_R": 0.5}})
        }
    )
    data = synthetic(6.0, roles=roles, gains={"VM_L": 0.7})
    ticks = run(s, data, [20] * 600, roles=roles)
    # During the plateau (2.2–4.8 s) the involved left side works at 70 % of the right.
    plateau = [t.lsi for t in ticks[220:480]]
    assert all(v is not None for v in plateau)
    assert float(np.median([v for v in plateau if v is not None])) == pytest.approx(70, abs=6)
    assert ticks[50].lsi is None  # both at rest: no index
    assert limb_symmetry_index(30.0, 2.0) is None


def quality_flags(data: np.ndarray, **overrides: object) -> np.ndarray:
    s = load_settings(environ={}, overrides={f"quality.{k}": v for k, v in overrides.items()})
    from feedback.processing.chain import EmgChain

    roles = tuple(f"C{i}" for i in range(data.shape[0]))
    chain = EmgChain(s.processing, s.calibration, RATE, roles)
    block = SampleBlock(0, 0.0, RATE, roles, data.astype(np.float32))
    return (
        SignalQuality(s.quality, RATE, data.shape[0])
        .process(data, chain.process(block).filtered)
        .flags
    )


def test_each_quality_problem_is_flagged_on_its_own_channel() -> None:
    clean = synthetic(4.0, roles=("VM",))[0].astype(float)
    t = np.arange(clean.shape[0]) / RATE
    flat = np.zeros_like(clean)
    clipped = clean.copy()
    clipped[5000:5010] = 16.0
    mains = clean + 0.1 * np.sin(2 * np.pi * 50 * t)
    motion = clean + np.where((t > 1.0) & (t < 1.8), 1.0 * np.sin(2 * np.pi * 4 * t), 0.0)
    flags = quality_flags(np.vstack([clean, flat, clipped, mains, motion]))
    assert not flags[0].any()
    assert not flags[1, :99].any()  # a constant value is flat once it lasted 50 ms
    assert (flags[1, 100:] & Flag.FLAT).all()
    assert (flags[2, 5000:6000] & Flag.CLIP).all() and not (flags[2, 7000:] & Flag.CLIP).any()
    assert (flags[3, 1000:6000] & Flag.MAINS).mean() > 0.95  # holds through rest and effort
    assert (flags[4, 2600:3400] & Flag.MOTION).all() and not (flags[4, 6000:] & Flag.MOTION).any()


def test_bad_target_withholds_zone_cues_and_says_why() -> None:
    s = load_settings(environ={}, overrides={"protocol.ready_s": 0.0, "protocol.work_s": 10.0})
    data = synthetic(8.0)
    data[0, 6000:12000] = 0.0  # VM electrode off from 3 s to 6 s, during the contraction
    ticks = run(s, data, [20] * 800)
    cues = [(c.kind, c.value, c.index) for t in ticks for c in t.cues]
    quality = [c for c in cues if c[0] == "quality"]
    assert quality[0][1] == "VM: electrode off / flat line"
    assert 6000 <= quality[0][2] < 6000 + 0.06 * RATE + 20  # flat_ms 50 ms, block 20
    assert quality[1][1] == "ok" and quality[1][2] > 12000
    assert not [c for c in cues if c[0] == "zone" and quality[0][2] < c[2] < quality[1][2]]
    assert ticks[350].problems == {"VM": ("electrode off / flat line",)}
    assert ticks[350].vm_vl_ratio is None


def run_with_gap(
    settings: Settings, data: np.ndarray, first: int, upto: int, resume: int
) -> list[Tick]:
    """Blocks of 20 from `first` to `upto`, then (samples lost, as over a dropped link) from
    `resume` to the end; each block keeps its true sample index, so the gap is visible."""
    pipe = Pipeline(settings, RATE, ("VM", "VL"))
    starts = [*range(first, upto, 20), *range(resume, data.shape[1] - 19, 20)]
    return [
        pipe.process(SampleBlock(i, i / RATE, RATE, ("VM", "VL"), data[:, i : i + 20]))
        for i in starts
    ]


def test_a_link_gap_mid_contraction_drops_it_and_keeps_measuring_the_next_ones() -> None:
    """Contractions 2–5 s, 8–11 s, 14–17 s; the link drops at 4.5 s (mid-contraction) and the
    device is back at 6.5 s, at rest. The open contraction has no known end: it is not
    reported with the lost time inside it, and the later ones are still measured."""
    s = load_settings(environ={})
    data = synthetic(18.0)
    ticks = run_with_gap(s, data, 0, 9000, 13000)
    found = [c for t in ticks for c in t.contractions]
    assert [round(c.onset_index / RATE) for c in found] == [8, 14]
    assert all(c.duration_s == pytest.approx(3.0, abs=0.25) for c in found)
    assert not [c for c in found if c.onset_index < 9000 < c.offset_index]


def test_a_session_that_starts_mid_contraction_relearns_its_rest_baseline() -> None:
    """The device streams on its own clock: the session's first second can be a contraction.
    A quieter window later replaces that baseline, so onsets and contractions are found."""
    s = load_settings(environ={})
    data = synthetic(18.0)
    ticks = run_with_gap(s, data, 5000, 5000, 5000)  # from 2.5 s, into the first contraction
    found = [c for t in ticks for c in t.contractions]
    assert [round(c.onset_index / RATE) for c in found] == [8, 14]
    assert all(c.duration_s == pytest.approx(3.0, abs=0.25) for c in found)


@pytest.mark.parametrize("variant", ["correct", "vl_15_ms_early"])
def test_the_onset_difference_check_catches_a_wrong_delay(variant: str) -> None:
    delay_ms = 30.0 if variant == "correct" else 15.0
    contractions = [
        c
        for t in run(load_settings(environ={}), synthetic(26.0, vl_delay_ms=delay_ms), [20] * 2600)
        for c in t.contractions
    ]
    try:
        assert_onset_differences(contractions, 30.0)
        ok = True
    except AssertionError:
        ok = False
    assert ok is (variant == "correct")
