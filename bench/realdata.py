"""Agreement of the causal chain with what real recordings show, and with synthetic truth.

Everything runs the production steps (EmgChain, OnsetDetector, ActivationDetector) causally;
one call over a whole file gives exactly what block-by-block streaming gives (tested in
tests/feedback), so files are processed in one call here for speed. Used by tests/realdata and
bench/realdata_report.py.

The measures are chosen so that a wrong detector fails them (tests/realdata runs always-on,
always-off and random detectors through the same functions):

- seated knee extension (`sen`): sample-wise balanced accuracy of the VM activation against the
  goniometer's extension phases (`extension_phases`), and the exact number of contractions
  (feedback.processing.contractions) against the number of extensions;
- standing knee flexion (`pie`), calibrated from the same subject's `sen` trial: the fraction of
  the trial VM is active (VM is a knee extensor: it should be mostly quiet);
- walking (Santuz): balanced accuracy of VM and VL activation against early stance;
- correlations at zero lag, Spearman (rank) so that no monotone transform flatters them.

`detector=` replaces the production activation by any function of the envelope, for the
negative controls and for the naive baseline and the per-file oracle.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from config.loader import load_settings
from config.settings import CalibrationSettings, Settings
from devices.base import SampleBlock
from devices.recording_formats import Recording
from feedback.processing.activation import ActivationDetector
from feedback.processing.chain import EmgChain
from feedback.processing.contraction_counter import ContractionCounter, CounterInput
from feedback.processing.contractions import contraction_spans, count_contractions
from feedback.processing.metrics import Contraction
from feedback.processing.onset import OnsetDetector, Tkeo
from firmware_bridge.synthetic_emg import ChannelModel, ContractionProfile, SyntheticEmg

MVC_WINDOW_S = 0.5
# Extension phase: the knee more than half-way from its resting (flexed) angle to its most
# extended angle. Fixed before any detector setting was chosen; the old bench used the same 0.5.
EXTENSION_FRACTION = 0.5
REST_PERCENTILE = 10.0  # calibration from a recording: rest = this percentile of the envelope
EARLY_STANCE_S = (-0.05, 0.30)  # walking: VM/VL expected active from touchdown, s

# A detector for the controls: (envelope of one channel, mV; rate) → active per sample.
Detector = Callable[[np.ndarray, float], np.ndarray]


def default_settings(**overrides: object) -> Settings:
    return load_settings(environ={}, overrides=overrides)


@dataclass(frozen=True, slots=True)
class Processed:
    envelope: np.ndarray  # (n_channels, n) mV
    active: np.ndarray  # (n_channels, n) bool: the amplitude-referenced activation
    hodges_bui: np.ndarray  # (n_channels, n) bool: the Hodges-Bui state, for comparison
    onsets: list[tuple[str, int, int]]  # (channel, at_index, detected_index) of activations
    group_delay_ms: float


def process(
    data: np.ndarray,
    rate: float,
    channels: tuple[str, ...],
    settings: Settings,
    calibration: CalibrationSettings | None = None,
) -> Processed:
    chain = EmgChain(settings.processing, settings.calibration, rate, channels)
    out = chain.process(SampleBlock(0, 0.0, rate, channels, data))
    detect = out.envelope
    if settings.processing.tkeo:
        detect = Tkeo(len(channels), rate, settings.onset.tkeo_lowpass_hz).process(out.filtered)
    hb = OnsetDetector(settings.onset, rate, channels).process(0, detect)
    act = ActivationDetector(settings.activation, rate, channels, calibration).process(
        0, out.envelope, hb
    )
    onsets = [(e.channel, e.at_index, e.detected_index) for e in act.events if e.kind == "onset"]
    return Processed(out.envelope, act.active, hb.active, onsets, chain.group_delay_ms)


def live_contractions(
    data: np.ndarray,
    rate: float,
    channels: tuple[str, ...],
    target: str,
    settings: Settings,
    *,
    settle: bool = True,
    block: int = 20,
) -> list[tuple[int, int]]:
    """[onset, offset) sample spans of the contractions the live counter reports, the steps
    streamed in `block`-sample blocks as a session runs them (uncalibrated). `settle` False:
    the counter is not given the on level, so the first contraction keeps its switch-on start
    (the behaviour before it was settled: the negative control)."""
    found = live_counted(data, rate, channels, target, settings, settle=settle, block=block)
    return [(k.onset_index, k.offset_index) for k in found]


def live_counted(
    data: np.ndarray,
    rate: float,
    channels: tuple[str, ...],
    target: str,
    settings: Settings,
    *,
    settle: bool = True,
    block: int = 20,
) -> list[Contraction]:
    """The contractions of `live_contractions`, as the counter reports them."""
    chain = EmgChain(settings.processing, settings.calibration, rate, channels)
    hb_det = OnsetDetector(settings.onset, rate, channels)
    act_det = ActivationDetector(settings.activation, rate, channels)
    c = settings.contractions
    t = channels.index(target)

    def level(index: int) -> float | None:
        on = act_det.on_level_at(index)
        return None if on is None or act_det.calibrated[t] else float(on[t])

    counter = ContractionCounter(
        rate,
        channels,
        target,
        min_on_s=c.min_on_s,
        merge_gap_s=c.merge_gap_s,
        calibrated=False,
        settle_level=level if settle else None,
    )
    found: list[Contraction] = []
    for a in range(0, data.shape[1], block):
        out = chain.process(SampleBlock(a, a / rate, rate, channels, data[:, a : a + block]))
        act = act_det.process(a, out.envelope, hb_det.process(a, out.envelope))
        pct = np.zeros_like(out.envelope)
        found += counter.process(CounterInput(a, act.active[t], out.envelope, pct, out.filtered))
    return found + counter.finish()


def contraction_timing(
    rec: Recording, settings: Settings | None = None, *, settle: bool = True
) -> list[dict[str, Any]]:
    """Seated extension, uncalibrated: per extension phase (the goniometer's, in order), the
    live VM contraction overlapping it most, its onset, offset and duration errors, s
    (contraction − extension; None when no contraction overlaps it), and its `settled`."""
    s = settings or default_settings()
    rate = rec.rate_hz
    found = live_counted(_select(rec, UCI_EMG), rate, UCI_EMG, "VM", s, settle=settle)
    spans = [(k.onset_index, k.offset_index) for k in found]
    settled = {(k.onset_index, k.offset_index): k.settled for k in found}
    truth = extension_phases(rec.data[rec.channels.index("FX")].astype(float))
    rows: list[dict[str, Any]] = []
    for k, (a, b) in enumerate(contraction_spans(truth, rate)):
        overlap = [(min(b, e) - max(a, o), (o, e)) for o, e in spans if min(b, e) > max(a, o)]
        row: dict[str, Any] = {"extension": k + 1, "onset_s": None, "offset_s": None}
        row["duration_s"], row["settled"] = None, None
        if overlap:
            o, e = max(overlap)[1]
            row["onset_s"] = round((o - a) / rate, 3)
            row["offset_s"] = round((e - b) / rate, 3)
            row["duration_s"] = round(((e - o) - (b - a)) / rate, 3)
            row["settled"] = settled[(o, e)]
        rows.append(row)
    return rows


# How far the first contraction's onset error (against the goniometer) may sit from the median
# of the same file's other contractions: the 90th percentile of that distance for the other
# contractions themselves (each against the median of the rest) on N_TXT, 0.38 s; before the
# first contraction was settled it exceeded this on 5 of the 10 files (docs/activation.md).
FIRST_ONSET_BOUND_S = 0.38


def first_contraction(
    rec: Recording, settings: Settings | None = None, *, settle: bool = True
) -> dict[str, Any]:
    """The first extension's live contraction against the file's others: onset and duration
    errors (s, against the goniometer) and their differences from the others' medians."""
    rows = contraction_timing(rec, settings, settle=settle)
    first, others = rows[0], [r for r in rows[1:] if r["onset_s"] is not None]
    out: dict[str, Any] = {
        "first_onset_s": first["onset_s"],
        "first_duration_s": first["duration_s"],
        "first_settled": first["settled"],
        "others_onset_s": None,
        "first_vs_others_onset_s": None,
        "first_vs_others_duration_s": None,
    }
    if others and first["onset_s"] is not None:
        onset = float(np.median([r["onset_s"] for r in others]))
        duration = float(np.median([r["duration_s"] for r in others]))
        out["others_onset_s"] = round(onset, 3)
        out["first_vs_others_onset_s"] = round(first["onset_s"] - onset, 3)
        out["first_vs_others_duration_s"] = round(first["duration_s"] - duration, 3)
    return out


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of sensitivity and specificity, sample by sample: 0.5 for always-on, always-off
    and any detector independent of the truth."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if truth.all() or not truth.any():
        raise ValueError("balanced accuracy needs both classes in the truth")
    return 0.5 * (float(pred[truth].mean()) + float((~pred[~truth]).mean()))


def extension_fraction(fx: np.ndarray) -> np.ndarray:
    """0 at the resting (flexed) knee angle, 1 at the most extended, per sample.

    The goniometer's sign and zero differ between files (the dataset README, oddity 6), but a
    straight knee always reads near 0°, so of the two ends of the range (2nd and 98th
    percentiles, robust to spikes) the one nearer 0° is extension and the other rest.
    """
    lo, hi = np.percentile(fx, [2, 98])
    rest, straight = (lo, hi) if abs(lo) > abs(hi) else (hi, lo)
    return np.asarray(np.clip((fx - rest) / (straight - rest), 0.0, 1.0))


def extension_phases(fx: np.ndarray) -> np.ndarray:
    return extension_fraction(fx) > EXTENSION_FRACTION


def moving_peak(envelope: np.ndarray, rate: float) -> float:
    w = max(1, round(MVC_WINDOW_S * rate))
    return float(np.convolve(envelope, np.full(w, 1.0 / w), mode="valid").max())


def calibration_from(envelope: np.ndarray, rate: float, channel: str) -> CalibrationSettings:
    """Rest and MVC of one channel from a recording of efforts: MVC as the guided calibration
    takes it (peak of the 500 ms moving average), rest as a low percentile and its spread."""
    rest = float(np.percentile(envelope, REST_PERCENTILE))
    quiet = envelope[envelope <= np.percentile(envelope, 2 * REST_PERCENTILE)]
    return CalibrationSettings(
        mvc_mv={channel: moving_peak(envelope, rate)},
        rest_mv={channel: rest},
        rest_sd_mv={channel: float(quiet.std())},
    )


def oracle_threshold(envelope: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The per-file ceiling: the best fixed threshold on the envelope, chosen WITH the truth
    (over its 1st..99th percentiles). Returns (balanced accuracy, threshold mV)."""
    best = (0.0, 0.0)
    for q in np.percentile(envelope, np.arange(1, 100)):
        ba = balanced_accuracy(envelope >= q, truth)
        if ba > best[0]:
            best = (ba, float(q))
    return best


def naive(envelope: np.ndarray, rate: float) -> np.ndarray:
    """A naive look-ahead baseline: active above the whole file's mean envelope."""
    return np.asarray(envelope >= envelope.mean())


def _select(rec: Recording, names: tuple[str, ...]) -> np.ndarray:
    return rec.data[[rec.channels.index(c) for c in names]]


UCI_EMG = ("RF", "BF", "VM", "ST")


def uci_seated(
    rec: Recording,
    settings: Settings | None = None,
    detector: Detector | None = None,
    calibration: CalibrationSettings | None = None,
) -> dict[str, Any]:
    """Seated knee extension (by default without calibration: the session reference): VM
    activation vs the goniometer's extension phases."""
    s = settings or default_settings()
    rate = rec.rate_hz
    p = process(_select(rec, UCI_EMG), rate, UCI_EMG, s, calibration)
    vm = UCI_EMG.index("VM")
    env = p.envelope[vm]
    active = p.active[vm] if detector is None else detector(env, rate)
    frac = extension_fraction(rec.data[rec.channels.index("FX")].astype(float))
    truth = frac > EXTENSION_FRACTION
    extensions = count_contractions(truth, rate)
    contractions = count_contractions(active, rate)
    oracle, _ = oracle_threshold(env, truth)
    return {
        "task": "sen",
        "balanced_accuracy": round(balanced_accuracy(active, truth), 3),
        "naive_balanced_accuracy": round(balanced_accuracy(naive(env, rate), truth), 3),
        "hodges_bui_balanced_accuracy": round(balanced_accuracy(p.hodges_bui[vm], truth), 3),
        "oracle_balanced_accuracy": round(oracle, 3),
        "extensions": extensions,
        "vm_contractions": contractions,
        "count_exact": contractions == extensions,
        "active_frac": round(float(active.mean()), 3),
        "spearman_envelope_extension": round(float(stats.spearmanr(env, frac).statistic), 3),
        "group_delay_ms": round(p.group_delay_ms, 1),
    }


def seated_calibration(rec: Recording, settings: Settings | None = None) -> CalibrationSettings:
    """The VM calibration a subject's seated extension trial gives (rest, MVC)."""
    s = settings or default_settings()
    p = process(_select(rec, ("VM",)), rec.rate_hz, ("VM",), s)
    return calibration_from(p.envelope[0], rec.rate_hz, "VM")


def uci_standing(
    rec: Recording,
    calibration: CalibrationSettings | None,
    settings: Settings | None = None,
    detector: Detector | None = None,
) -> dict[str, Any]:
    """Standing knee flexion: VM (an extensor) stays mostly inactive while the hamstrings
    flex the knee. `calibration` from the same subject's seated extension trial."""
    s = settings or default_settings()
    rate = rec.rate_hz
    p = process(_select(rec, UCI_EMG), rate, UCI_EMG, s, calibration)
    vm, bf, st = (UCI_EMG.index(c) for c in ("VM", "BF", "ST"))
    active = p.active[vm] if detector is None else detector(p.envelope[vm], rate)
    # Standing, the knee rests straight (the end of the range nearer 0°) and flexes away.
    straight = extension_fraction(rec.data[rec.channels.index("FX")].astype(float))
    moving = straight < 1.0 - EXTENSION_FRACTION
    ham = p.active[bf] | p.active[st]
    return {
        "task": "pie",
        "calibrated_from": "sen" if calibration is not None else None,
        "vm_active_frac": round(float(active.mean()), 3),
        "hodges_bui_vm_active_frac": round(float(p.hodges_bui[vm].mean()), 3),
        "flexions": count_contractions(moving, rate),
        "hamstring_balanced_accuracy": round(balanced_accuracy(ham, moving), 3)
        if moving.any() and not moving.all()
        else None,
    }


def walking(
    rec: Recording,
    touchdowns_s: list[float],
    settings: Settings | None = None,
    detector: Detector | None = None,
) -> dict[str, Any]:
    """VM and VL in early stance (touchdown −50…+300 ms, the loading response): balanced
    accuracy of their activation against that window, per cycle that is fully recorded."""
    s = settings or default_settings()
    rate = rec.rate_hz
    chans = ("VM", "VL")
    p = process(_select(rec, chans), rate, chans, s)
    n = p.envelope.shape[1]
    early = np.zeros(n, dtype=bool)
    scored = np.zeros(n, dtype=bool)
    for td, nxt in itertools.pairwise(touchdowns_s):
        a = round((td - rec.t0_s + EARLY_STANCE_S[0]) * rate)
        b = round((td - rec.t0_s + EARLY_STANCE_S[1]) * rate)
        early[max(a, 0) : b] = True
        scored[max(a, 0) : round((nxt - rec.t0_s + EARLY_STANCE_S[0]) * rate)] = True
    out: dict[str, Any] = {
        "cycles": len(touchdowns_s) - 1,
        "group_delay_ms": round(p.group_delay_ms, 1),
    }
    for i, ch in enumerate(chans):
        env = p.envelope[i]
        active = p.active[i] if detector is None else detector(env, rate)
        out[ch] = {
            "balanced_accuracy": round(balanced_accuracy(active[scored], early[scored]), 3),
            "active_frac": round(float(active[scored].mean()), 3),
            "early_vs_rest_envelope": round(
                float(env[scored & early].mean() / env[scored & ~early].mean()), 2
            ),
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
        "false_activations_at_rest": len(false),
        "rest_minutes": rest_minutes,
        "false_activations_per_10_min_at_rest": round(10 * len(false) / rest_minutes, 2),
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
