"""What a session keeps for its report stays bounded however long it runs."""

from __future__ import annotations

import json

from feedback.clinic.validation import MAX_PAYLOAD_BYTES
from feedback.session import REPORT_CONTRACTIONS, SessionResult

CONTRACTION = {"channel": "VM", "onset_index": 123456789, "offset_index": 123466789,
               "duration_s": 5.0012, "peak_pct_mvc": 48.1234, "mean_pct_mvc": 35.4321,
               "rms_mv": 0.1234, "median_freq_hz": 81.234, "mean_freq_hz": 92.345,
               "time_to_peak_s": 1.2345, "vm_vl_onset_ms": 31.5, "vm_vl_ratio": 1.0234,
               "in_band_s": 3.456}  # fmt: skip


def four_hours() -> SessionResult:
    r = SessionResult("S-test")
    for i in range(1440):  # a contraction every 10 s for 4 hours
        r.contractions.append({**CONTRACTION, "onset_index": i})
        r.contractions_total += 1
        r.compute_us.add(150.0 + i % 7)
    return r


def test_a_four_hour_report_fits_a_clinic_message() -> None:
    report = four_hours().report()
    assert report["contractions"] == 1440  # counted in full
    kept = report["contraction_metrics"]
    assert len(kept) == REPORT_CONTRACTIONS and kept[-1]["onset_index"] == 1439  # the newest
    assert len(json.dumps({"summary": report}).encode()) < MAX_PAYLOAD_BYTES


def test_negative_control_every_contraction_would_not_fit() -> None:
    r = four_hours()
    everything = {**r.report(), "contraction_metrics": [CONTRACTION] * r.contractions_total}
    assert len(json.dumps({"summary": everything}).encode()) > MAX_PAYLOAD_BYTES
