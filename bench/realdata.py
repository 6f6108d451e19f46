"""Agreement of the causal chain with what real recordings show, and with synthetic truth.

Everything runs the production steps (EmgChain, OnsetDetector) causally; one call over a whole
file gives exactly what block-by-block streaming gives (tested in tests/feedback), so files are
processed in one call here for speed. Used by tests/realdata and bench/realdata_report.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from config import load_settings
from config.settings import Settings
from devices.base import SampleBlock
from devices.recording_formats import Recording
from feedback.processing.chain import EmgChain
from feedback.processing.onset import OnsetDetector, Tkeo
from firmware_bridge.synthetic_emg import ChannelModel, ContractionProfile, SyntheticEmg

MVC_WINDOW_S = 0.5
MIN_MOVEMENT_S = 0.3
MATCH_TOLERANCE_S = 0.5


def default_settings(**overrides: object) -> Settings:
    return load_settings(environ={}, overrides=overrides)


@dataclass(frozen=True, slots=True)
class Processed:
    envelope: np.ndarray  # (n_channels, n) mV
    active: np.ndarray  # (n_channels, n) bool, Hodges-Bui
    onsets: list[tuple[str, int, int]]  # (channel, at_index, detected_index)
    group_delay_ms: float


def process(
    data: np.ndarray, rate: float, channels: tuple[str, ...], settings: Settings
) -> Processed:
    chain = EmgChain(settings.processing, settings.calibration, rate, channels)
    out = chain.process(SampleBlock(0, 0.0, rate, channels, data))
    detect = out.envelope
    if settings.processing.tkeo:
        detect = Tkeo(len(channels), rate, settings.onset.tkeo_lowpass_hz).process(out.filtered)
    det = OnsetDetector(settings.onset, rate, channels)
    block = det.process(0, detect)
    onsets = [(e.channel, e.at_index, e.detected_index) for e in block.events if e.kind == "onset"]
    return Processed(out.envelope, block.active, onsets, chain.group_delay_ms)


def segments(mask: np.ndarray, min_len: int = 1) -> list[tuple[int, int]]:
    """[start, end) runs of True at least `min_len` long."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [
        (int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True) if e - s >= min_len
    ]


def overlaps(a: tuple[int, int], others: list[tuple[int, int]], tol: int) -> bool:
    return any(s - tol < a[1] and a[0] < e + tol for s, e in others)


def moving_peak(envelope: np.ndarray, rate: float) -> float:
    w = max(1, round(MVC_WINDOW_S * rate))
    return float(np.convolve(envelope, np.full(w, 1.0 / w), mode="valid").max())


def knee_deviation(fx: np.ndarray, rate: float) -> np.ndarray:
    """|angle − resting angle| (resting = median of the first second), 0..1 of its maximum."""
    rest = float(np.median(fx[: round(rate)]))
    d = np.abs(fx.astype(float) - rest)
    return d / d.max() if d.max() > 0 else d


def best_lag_correlation(
    x: np.ndarray, y: np.ndarray, rate: float, max_lag_s: float = 1.0
) -> tuple[float, float]:
    """Largest Pearson r of x(t) against y(t + lag), lag in ±max_lag_s (y lags when lag > 0)."""
    best = (-1.0, 0.0)
    step = max(1, round(0.01 * rate))
    for lag in range(-round(max_lag_s * rate), round(max_lag_s * rate) + 1, step):
        a, b = (x[: len(x) - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: len(y) + lag])
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best[0]:
            best = (r, lag / rate * 1000.0)
    return best


def uci_seated(rec: Recording, settings: Settings | None = None) -> dict[str, Any]:
    """Seated knee extension: VM envelope vs knee angle; VM contractions vs extension movements."""
    s = settings or default_settings()
    rate = rec.rate_hz
    emg = ("RF", "BF", "VM", "ST")
    data = rec.data[[rec.channels.index(c) for c in emg]]
    p = process(data, rate, emg, s)
    vm = emg.index("VM")
    dev = knee_deviation(rec.data[rec.channels.index("FX")], rate)
    r, lag_ms = best_lag_correlation(p.envelope[vm], dev, rate)
    moves = segments(dev > 0.5, round(MIN_MOVEMENT_S * rate))
    contractions = segments(p.active[vm], round(0.2 * rate))
    tol = round(MATCH_TOLERANCE_S * rate)
    hit = sum(overlaps(m, contractions, tol) for m in moves)
    true_c = sum(overlaps(c, moves, tol) for c in contractions)
    sens = hit / len(moves) if moves else None
    prec = true_c / len(contractions) if contractions else None
    f1 = 2 * sens * prec / (sens + prec) if sens and prec else 0.0
    return {
        "task": "sen",
        "envelope_angle_r": round(r, 3),
        "angle_lag_ms": lag_ms,
        "extensions": len(moves),
        "vm_contractions": len(contractions),
        "extensions_with_vm_contraction": hit,
        "vm_contractions_during_extension": true_c,
        "sensitivity": None if sens is None else round(sens, 3),
        "precision": None if prec is None else round(prec, 3),
        "f1": round(f1, 3),
        "vm_mvc_mv": round(moving_peak(p.envelope[vm], rate), 4),
        "group_delay_ms": round(p.group_delay_ms, 1),
    }


def uci_standing(
    rec: Recording,
    vm_mvc_mv: float | None,
    threshold_pct: float = 30.0,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Standing knee flexion: VM stays below the band while the hamstrings (BF, ST) burst.
    `vm_mvc_mv` from the same subject's seated extension file (None: this file's own peak)."""
    s = settings or default_settings()
    rate = rec.rate_hz
    emg = ("RF", "BF", "VM", "ST")
    data = rec.data[[rec.channels.index(c) for c in emg]]
    p = process(data, rate, emg, s)
    vm, bf, st = emg.index("VM"), emg.index("BF"), emg.index("ST")
    mvc = vm_mvc_mv if vm_mvc_mv is not None else moving_peak(p.envelope[vm], rate)
    pct = 100.0 * p.envelope[vm] / mvc
    dev = knee_deviation(rec.data[rec.channels.index("FX")], rate)
    moving = dev > 0.5
    moves = segments(moving, round(MIN_MOVEMENT_S * rate))
    ham = segments(p.active[bf] | p.active[st], round(0.2 * rate))
    tol = round(MATCH_TOLERANCE_S * rate)
    bursts = sum(overlaps(m, ham, tol) for m in moves)
    ham_env = (p.envelope[bf] + p.envelope[st]) / 2
    in_move = float(ham_env[moving].mean()) if moving.any() else float("nan")
    outside = float(ham_env[~moving].mean()) if (~moving).any() else float("nan")
    return {
        "task": "pie",
        "mvc_source": "sen" if vm_mvc_mv is not None else "own peak",
        "flexions": len(moves),
        "vm_below_threshold_frac": round(float((pct[moving] < threshold_pct).mean()), 3)
        if moving.any()
        else None,
        "vm_median_pct_mvc_in_flexion": round(float(np.median(pct[moving])), 1)
        if moving.any()
        else None,
        "flexions_with_hamstring_burst": bursts,
        "hamstring_burst_frac": round(bursts / len(moves), 3) if moves else None,
        "hamstring_envelope_ratio_move_vs_still": round(in_move / outside, 2)
        if outside > 0
        else None,
    }


def walking(
    rec: Recording, touchdowns_s: list[float], settings: Settings | None = None
) -> dict[str, Any]:
    """Per gait cycle: does the VM/VL envelope peak in early stance (touchdown −50…+300 ms)?"""
    s = settings or default_settings()
    rate = rec.rate_hz
    chans = ("VM", "VL")
    data = rec.data[[rec.channels.index(c) for c in chans]]
    p = process(data, rate, chans, s)
    delay = p.group_delay_ms / 1000.0
    out: dict[str, Any] = {
        "cycles": len(touchdowns_s) - 1,
        "group_delay_ms": round(p.group_delay_ms, 1),
    }
    for i, ch in enumerate(chans):
        env = p.envelope[i]
        early, ratios = 0, []
        for td, nxt in itertools.pairwise(touchdowns_s):
            a = round((td - rec.t0_s - 0.15) * rate)
            b = round((nxt - rec.t0_s - 0.15) * rate)
            peak_s = (a + int(np.argmax(env[a:b]))) / rate + rec.t0_s - td - delay
            early += -0.05 <= peak_s <= 0.30
            w0, w1 = round((td - rec.t0_s) * rate), round((td - rec.t0_s + 0.25 + delay) * rate)
            rest = np.r_[env[a:w0], env[w1:b]]
            ratios.append(float(env[w0:w1].mean() / rest.mean()))
        out[ch] = {
            "cycles_peaking_in_early_stance": int(early),
            "frac": round(early / max(1, len(touchdowns_s) - 1), 3),
            "early_stance_vs_rest_of_cycle": round(float(np.median(ratios)), 2),
        }
    return out


def synthetic_truth(
    settings: Settings, *, contractions: int = 40, rest_minutes: float = 2.0, seed: int = 1
) -> dict[str, Any]:
    """Onset delay against the scripted onset, false activations at rest, VM–VL recovery."""
    rate, delay_ms = 2000.0, 30.0
    profile = ContractionProfile(
        first_rest_s=2.0, contract_s=2.0, relax_s=3.0, ramp_s=0.1, level=0.3
    )
    models = (ChannelModel("VM", 0.5), ChannelModel("VL", 0.5, onset_delay_s=delay_ms / 1000))
    n = round((2.0 + contractions * 5.0) * rate)
    data = np.asarray(
        SyntheticEmg(rate, models, profile, baseline_noise_mv=0.005, seed=seed)(n), np.float32
    )
    p = process(data, rate, ("VM", "VL"), settings)
    truth = 2.0 + 5.0 * np.arange(contractions)
    vm = [(a, d) for c, a, d in p.onsets if c == "VM"]
    vl = [a for c, a, _ in p.onsets if c == "VL"]
    latency, marked, diffs = [], [], []
    for t in truth:
        i = round(t * rate)
        near = [(a, d) for a, d in vm if -0.2 * rate <= a - i <= 1.0 * rate]
        if not near:
            continue
        a, d = near[0]
        latency.append((d - i) / rate * 1000)
        marked.append((a - i) / rate * 1000)
        pair = [v for v in vl if abs(v - a) <= 0.3 * rate]
        if pair:
            diffs.append((min(pair, key=lambda v: abs(v - a)) - a) / rate * 1000)
    rest = np.asarray(
        SyntheticEmg(
            rate,
            models,
            ContractionProfile(first_rest_s=1e9),
            baseline_noise_mv=0.005,
            seed=seed + 1,
        )(round(rest_minutes * 60 * rate)),
        np.float32,
    )
    false = [o for o in process(rest, rate, ("VM", "VL"), settings).onsets if o[0] == "VM"]
    lat = np.asarray(latency) if latency else np.full(1, np.nan)
    return {
        "contractions": contractions,
        "detected": len(latency),
        "detection_latency_ms_p50": round(float(np.median(lat)), 1),
        "detection_latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "marked_onset_error_ms_p50": round(float(np.median(marked)), 1) if marked else None,
        "false_activations_per_min_at_rest": round(len(false) / rest_minutes, 2),
        "vm_vl_simulated_ms": delay_ms,
        "vm_vl_recovered_ms_p50": round(float(np.median(diffs)), 1) if diffs else None,
        "vm_vl_abs_error_ms_p95": round(
            float(np.percentile(np.abs(np.asarray(diffs) - delay_ms), 95)), 1
        )
        if diffs
        else None,
        "group_delay_ms": round(p.group_delay_ms, 1),
    }


ENVELOPE_SETTINGS: dict[str, dict[str, object]] = {
    "rms 50 ms": {"processing.rms_window_ms": 50.0},
    "rms 100 ms": {},
    "lowpass 6 Hz o2": {"processing.envelope": "lowpass"},
    "lowpass 10 Hz o4": {
        "processing.envelope": "lowpass",
        "processing.envelope_lowpass_hz": 10.0,
        "processing.envelope_lowpass_order": 4,
    },
    "rms 50 ms + TKEO": {"processing.rms_window_ms": 50.0, "processing.tkeo": True},
}
