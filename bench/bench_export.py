"""BIDS-EMG export time (issue 16): a patient with 30 sessions, each with a 62 s recording.

    python -m bench.bench_export [--sessions 30] [--runs 5]     → bench/results/export.json

The clinic database (SQLite) is filled as bench.bench_report fills it (through the logger's
store: session_start, 60 s of live at 10 Hz, 10 reps, 10 stimulation bursts, session_end);
each session gets an EDF+ record written by the station's own EDF+ writer (2 kHz, EMG VM and
EMG VL in µV plus their envelopes, with annotations), named as the recorder names it in the
header. Timed: `export` of the whole patient into a fresh folder (find the records, copy them,
write the sidecars and events), p50 over the runs; then once, the dataset checks and, where
installed, the BIDS validator.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_report import fill
from feedback.clinic.bids import export
from feedback.clinic.bids_check import check_dataset, run_validator
from feedback.clinic.db import connect
from feedback.outputs.edf_writer import EdfPlusWriter, SignalSpec

RESULTS = Path(__file__).with_name("results")
RANGE_UV = 16384.0


def write_recording(
    path: Path, session_id: str, patient: str, *, seconds: int = 62, rate_hz: int = 2000,
    channels: tuple[str, ...] = ("VM", "VL"), seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """An EDF+ record shaped like the station's (EMG channels, envelopes, annotations), the
    session id in the header's recording field. Returns the raw EMG written, µV."""
    rng = np.random.default_rng(seed)
    n = seconds * rate_hz
    t = np.arange(n) / rate_hz
    on = ((t // 5) % 2 == 1).astype(float)  # 5 s rest, 5 s work
    raw = rng.normal(0, 1, (len(channels), n)) * (20 + 300 * on)
    env = np.abs(raw)
    signals = [SignalSpec(f"EMG {c}", "uV", -RANGE_UV, RANGE_UV) for c in channels]
    signals += [SignalSpec(f"EMG {c} env", "uV", 0.0, RANGE_UV) for c in channels]
    w = EdfPlusWriter(
        path, signals, rate_hz=rate_hz, patient_code=patient, equipment="vm-feedback",
        recording_additional=f"{session_id}_delay_25.0ms", fsync=False,
    )  # fmt: skip
    try:
        for k in range(0, seconds, 10):
            w.annotate(k + 5.0, "cue phase work")
        for r in range(seconds):
            sl = slice(r * rate_hz, (r + 1) * rate_hz)
            w.write_record(np.vstack([raw[:, sl], env[:, sl]]))
    finally:
        w.close()
    return np.asarray(raw, dtype=np.float64)


def make_dataset_inputs(tmp: Path, sessions: int) -> tuple[str, Path, list[str]]:
    db_url = str(tmp / "clinic.db")
    ids = fill(db_url, patient="P-0030", sessions=sessions)
    recordings = tmp / "recordings"
    recordings.mkdir()
    for k, sid in enumerate(ids):
        write_recording(recordings / f"rec-{k:03d}.edf", sid, "P-0030", seed=k)
    return db_url, recordings, ids


def run(sessions: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        db_url, recordings, _ = make_dataset_inputs(tmp, sessions)
        fill_s = time.perf_counter() - t
        db = connect(db_url)
        timings = []
        out = tmp / "bids"
        try:
            for _ in range(runs):
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                summary = export(db, out, [recordings], patient="P-0030")
                timings.append(time.perf_counter() - t)
        finally:
            db.close()
        assert len(summary.exported) == sessions, summary.as_dict()
        t = time.perf_counter()
        problems = check_dataset(out)
        check_s = time.perf_counter() - t
        validator = Path(sys.executable).with_name("bids-validator-deno")
        result_validator: dict[str, Any] = {"ran": False}
        if validator.exists():
            t = time.perf_counter()
            issues = run_validator(out, validator)
            result_validator = {
                "ran": True,
                "seconds": round(time.perf_counter() - t, 2),
                "errors": sum(1 for i in issues if i.get("severity") == "error"),
                "warnings": sum(1 for i in issues if i.get("severity") == "warning"),
            }
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    timings.sort()
    return {
        "sessions": sessions,
        "recording_s_per_session": 62,
        "rate_hz": 2000,
        "runs": runs,
        "fill_db_and_records_s": round(fill_s, 2),
        "export_p50_s": round(timings[len(timings) // 2], 3),
        "export_max_s": round(timings[-1], 3),
        "events_per_export": summary.events,
        "dataset_bytes": size,
        "check_dataset_s": round(check_s, 3),
        "check_dataset_problems": len(problems),
        "bids_validator": result_validator,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_export")
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), **run(args.sessions, args.runs)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
