"""Proof on real recordings (the gzipped fixtures, so a fresh clone runs it) and on synthetic
signals with known truth. bench/realdata_report.py runs the same analysis on every UCI file.

Each real-data check is a function of the detector's output, and every check also runs an
always-on, an always-off and a random detector and asserts that each of them FAILS it: a check
that a wrong detector passes proves nothing (issue 10: the old overlap F1 passed always-on).
Settings were chosen on N_TXT only; 11Asen (A_TXT) is a held-out file.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import realdata as R
from devices.recording_formats import Recording, load_recording

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def always_on(envelope: np.ndarray, rate: float) -> np.ndarray:
    return np.ones(envelope.shape, dtype=bool)


def always_off(envelope: np.ndarray, rate: float) -> np.ndarray:
    return np.zeros(envelope.shape, dtype=bool)


def random_blocks(envelope: np.ndarray, rate: float) -> np.ndarray:
    """On/off in random blocks of about 2 s (seeded): contraction-like, but blind."""
    rng = np.random.default_rng(7)
    block = round(2.0 * rate)
    return np.repeat(rng.random(envelope.shape[0] // block + 1) < 0.5, block)[: envelope.shape[0]]


CONTROLS = {"always-on": always_on, "always-off": always_off, "random": random_blocks}


@cache
def recording(name: str) -> Recording:
    return load_recording(DATA / name)


def seated_ok(r: dict[str, Any]) -> bool:
    """VM activation follows the extension phases and one contraction per extension."""
    return bool(r["balanced_accuracy"] >= 0.8 and r["count_exact"])


def standing_ok(seated: dict[str, Any], standing: dict[str, Any]) -> bool:
    """Calibrated from the seated trial: VM active in its extensions, quiet while standing."""
    return bool(seated["balanced_accuracy"] >= 0.8 and standing["vm_active_frac"] <= 0.05)


def walking_ok(r: dict[str, Any]) -> bool:
    return all(r[m]["balanced_accuracy"] >= 0.7 for m in ("VM", "VL"))


@pytest.mark.parametrize("name", ["4Nsen", "7Nsen", "11Asen"])
def test_seated_extension_vm_activation_follows_the_goniometer(name: str) -> None:
    r = R.uci_seated(recording(f"{name}.txt.gz"))
    assert seated_ok(r), r
    assert r["extensions"] == {"4Nsen": 4, "7Nsen": 5, "11Asen": 4}[name]
    assert r["spearman_envelope_extension"] > 0.6  # zero lag, rank: no transform flatters it
    for label, control in CONTROLS.items():
        assert not seated_ok(R.uci_seated(recording(f"{name}.txt.gz"), detector=control)), label


@pytest.mark.parametrize("subject", ["4N", "7N"])
def test_standing_vm_stays_quiet_when_calibrated_from_the_subjects_extension_trial(
    subject: str,
) -> None:
    sen, pie = recording(f"{subject}sen.txt.gz"), recording(f"{subject}pie.txt.gz")
    cal = R.seated_calibration(sen)
    seated, standing = R.uci_seated(sen, calibration=cal), R.uci_standing(pie, cal)
    assert standing_ok(seated, standing), (seated, standing)
    for label, control in CONTROLS.items():
        bad = (
            R.uci_seated(sen, calibration=cal, detector=control),
            R.uci_standing(pie, cal, detector=control),
        )
        assert not standing_ok(*bad), label


def test_walking_vm_and_vl_activate_in_early_stance() -> None:
    rec = recording("ID0012_TW_01_emg.csv.gz")
    touchdowns = [a.onset_s for a in rec.annotations if a.text == "touchdown"]
    r = R.walking(rec, touchdowns)
    assert walking_ok(r), r
    for m in ("VM", "VL"):
        assert r[m]["early_vs_rest_envelope"] > 3.0
    for label, control in CONTROLS.items():
        assert not walking_ok(R.walking(rec, touchdowns, detector=control)), label


def test_balanced_accuracy_of_blind_detectors_is_one_half() -> None:
    truth = np.r_[np.zeros(300, bool), np.ones(100, bool)]
    assert R.balanced_accuracy(np.ones(400, bool), truth) == 0.5
    assert R.balanced_accuracy(np.zeros(400, bool), truth) == 0.5
    assert R.balanced_accuracy(truth, truth) == 1.0
    with pytest.raises(ValueError):
        R.balanced_accuracy(truth, np.ones(400, bool))


@pytest.mark.parametrize("label", list(R.ENVELOPE_SETTINGS))
def test_synthetic_onsets_latency_false_alarms_and_vm_vl_difference(label: str) -> None:
    r = R.synthetic_truth(
        R.default_settings(**R.ENVELOPE_SETTINGS[label]), contractions=20, rest_minutes=1.0
    )
    assert r["detected"] == 20
    assert 0 < r["detection_latency_ms_p50"] < 100
    assert r["detection_latency_ms_p95"] < 120
    assert abs(r["marked_onset_error_ms_p50"]) < 40  # the Hodges-Bui instant
    assert r["false_activations_at_rest"] == 0
    assert r["vm_vl_recovered_ms_p50"] == pytest.approx(30.0, abs=3.0)
    assert r["vm_vl_abs_error_ms_p95"] < 10.0


def test_at_most_one_false_activation_in_ten_minutes_of_rest() -> None:
    r = R.synthetic_truth(R.default_settings(), contractions=2, rest_minutes=10.0, seed=3)
    assert r["false_activations_at_rest"] <= 1
