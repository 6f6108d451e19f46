"""Proof on real recordings (the gzipped fixtures, so a fresh clone runs it) and on synthetic
signals with known truth. bench/realdata_report.py runs the same analysis on all 66 UCI files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import realdata as R
from devices.recording_formats import load_recording

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.mark.parametrize("name", ["4Nsen", "11Asen"])
def test_seated_extension_vm_tracks_the_knee_and_contractions_match_extensions(name: str) -> None:
    r = R.uci_seated(load_recording(DATA / f"{name}.txt.gz"))
    assert r["extensions"] == 4  # both files: four extensions by the goniometer
    assert r["envelope_angle_r"] > 0.6
    assert 0 <= r["angle_lag_ms"] <= 400  # the knee moves after the muscle fires
    assert r["sensitivity"] == 1.0
    assert r["precision"] >= 0.75


def test_standing_flexion_vm_stays_below_the_band_while_hamstrings_burst() -> None:
    seated = R.uci_seated(load_recording(DATA / "4Nsen.txt.gz"))
    r = R.uci_standing(load_recording(DATA / "4Npie.txt.gz"), seated["vm_mvc_mv"])
    assert r["flexions"] == 4
    assert r["vm_below_threshold_frac"] >= 0.95
    assert r["vm_median_pct_mvc_in_flexion"] < 10.0
    assert r["hamstring_burst_frac"] == 1.0
    assert r["hamstring_envelope_ratio_move_vs_still"] > 3.0


def test_walking_vm_and_vl_rise_in_early_stance_after_each_touchdown() -> None:
    rec = load_recording(DATA / "ID0012_TW_01_emg.csv.gz")
    touchdowns = [a.onset_s for a in rec.annotations if a.text == "touchdown"]
    r = R.walking(rec, touchdowns)
    for muscle in ("VM", "VL"):
        assert r[muscle]["frac"] == 1.0
        assert r[muscle]["early_stance_vs_rest_of_cycle"] > 3.0


@pytest.mark.parametrize("label", list(R.ENVELOPE_SETTINGS))
def test_synthetic_onsets_latency_false_alarms_and_vm_vl_difference(label: str) -> None:
    r = R.synthetic_truth(
        R.default_settings(**R.ENVELOPE_SETTINGS[label]), contractions=20, rest_minutes=1.0
    )
    assert r["detected"] == 20
    assert 0 < r["detection_latency_ms_p50"] < 80
    assert r["detection_latency_ms_p95"] < 100
    assert r["false_activations_per_min_at_rest"] <= 0.5
    assert r["vm_vl_recovered_ms_p50"] == pytest.approx(30.0, abs=3.0)
    assert r["vm_vl_abs_error_ms_p95"] < 10.0
