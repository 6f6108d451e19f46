"""Report generation time (issue 14): a patient with 30 sessions of 10 repetitions each.

    python -m bench.bench_report [--sessions 30] [--runs 3]     → bench/results/report.json

The clinic database (SQLite) is filled through the logger's own store (`ClinicStore.ingest`,
schema-checked) with synthetic sessions: session_start, 60 s of `live` at 10 Hz, 10 `rep`
messages, a few stimulation bursts, session_end. Timed: the progress report (HTML + CSV), the
same with the PDF, and one session report (HTML + CSV, and with PDF); the peer in the same run is
writing the CSV alone (the numbers without charts). p50 over the runs, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from feedback.clinic import report
from feedback.clinic.db import connect
from feedback.clinic.store import ClinicStore, Incoming
from feedback.outputs.topics import Topics

RESULTS = Path(__file__).with_name("results")
CLINIC, STATION = "clinic-demo", "st-bench"
DAY = 86400.0


def _msg(kind: str, session: str, msg_id: int, t: float, **body: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "session": session, "msg_id": msg_id, "t": t, **body}


class _Writer:
    """Numbers a session's messages as a station does: live on its own msg_id counter."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.counters = {"live": 0, "lossless": 0}

    def __call__(self, topic: str, kind: str, t: float, batch: list[Incoming], **body: Any) -> None:
        lane = "live" if kind == "live" else "lossless"
        self.counters[lane] += 1
        m = _msg(kind, self.session, self.counters[lane], t, **body)
        batch.append(Incoming(topic, json.dumps(m).encode(), t))


def fill(db_url: str, patient: str = "P-0030", sessions: int = 30, seed: int = 1) -> list[str]:
    """A patient's sessions, one a day, slowly improving; returns the session ids."""
    rng = random.Random(seed)
    topics = Topics(CLINIC, STATION)
    store = ClinicStore(db_url)
    ids = []
    t0 = 1_790_000_000.0
    try:
        for s in range(sessions):
            sid = f"S20260101-{s:06d}-abcdef"
            ids.append(sid)
            start = t0 + s * DAY
            put = _Writer(sid)
            batch: list[Incoming] = []
            settings = {
                "session": {"patient": patient},
                "target": {"low_pct": 30, "high_pct": 60},
                "protocol": {"hold_s": 3.0, "reps": 10},
                "stimulation": {"enabled": True},
            }
            put(
                topics.session,
                "session_start",
                start,
                batch,
                patient=patient,
                side="right",
                protocol="demo",
                reps_prescribed=10,
                pain_before=max(0, 6 - s // 6),
                device={"spec": "sim", "kind": "sim", "rate_hz": 2000, "channels": ["VM", "VL"]},
                settings=settings,
            )
            for i in range(600):
                t = start + i / 10
                on = (i // 50) % 2 == 1
                vm = (40 + s * 0.3 + rng.gauss(0, 4)) if on else abs(rng.gauss(2, 1))
                put(
                    topics.live,
                    "live",
                    t,
                    batch,
                    pct_mvc={"VM": round(vm, 2), "VL": round(vm * 0.95, 2)},
                    phase="work" if on else "rest",
                    reps=i // 100,
                    index=i * 200,
                    t_sample=t,
                )
            for r in range(1, 11):
                achieved = rng.random() < 0.6 + s / 100
                put(
                    topics.rep,
                    "rep",
                    start + r * 6,
                    batch,
                    period=r,
                    achieved=achieved,
                    rep=r if achieved else None,
                    peak_pct_mvc=round(45 + s * 0.4 + rng.gauss(0, 5), 1),
                    mean_pct_mvc=round(38 + rng.gauss(0, 3), 1),
                    hold_s=round(2 + rng.random() * 2, 2),
                    time_in_band_s=round(2.5 + rng.random(), 2),
                    time_to_band_s=round(rng.random(), 2),
                    vm_vl_ratio=round(1.0 + s * 0.004 + rng.gauss(0, 0.02), 3),
                    onset_diff_ms=round(rng.gauss(5 + s, 10), 1),
                    symmetry_pct=None,
                )
                put(
                    topics.event,
                    "stim_burst",
                    start + r * 6 + 1,
                    batch,
                    command_id=r,
                    amplitude_ma=20.0,
                    pulse_width_us=300,
                    frequency_hz=35.0,
                    burst=r,
                )
            put(
                topics.session,
                "session_end",
                start + 62,
                batch,
                pain_after=max(0, 5 - s // 6),
                summary={"stopped_by": "end", "reps": 10, "duration_s": 62.0},
            )
            result = store.ingest(batch)
            assert result.invalid == 0, result.reasons[:3]
    finally:
        store.close()
    return ids


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(sessions: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"{tmp}/clinic.db"
        t_fill = _timed(lambda: fill(db_url, sessions=sessions))
        db = connect(db_url)
        out = Path(tmp) / "out"
        first = "S20260101-000000-abcdef"
        _timed(lambda: report.progress_report(db, "P-0030", out))  # imports, font cache
        timings: dict[str, list[float]] = {
            k: []
            for k in (
                "progress_html_csv",
                "progress_with_pdf",
                "session_html_csv",
                "session_with_pdf",
                "csv_only_peer",
            )
        }
        for _ in range(runs):
            timings["progress_html_csv"].append(
                _timed(lambda: report.progress_report(db, "P-0030", out))
            )
            timings["progress_with_pdf"].append(
                _timed(lambda: report.progress_report(db, "P-0030", out, pdf_too=True))
            )
            timings["session_html_csv"].append(
                _timed(lambda: report.session_report(db, first, out))
            )
            timings["session_with_pdf"].append(
                _timed(lambda: report.session_report(db, first, out, pdf_too=True))
            )
            timings["csv_only_peer"].append(
                _timed(
                    lambda: report._write_csv(
                        out / "peer.csv",
                        report.PROGRESS_COLUMNS,
                        report.progress_rows(db, "P-0030"),
                    )
                )
            )
        sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.suffix != ".csv"}
        db.close()

    def p50(v: list[float]) -> float:
        return round(sorted(v)[len(v) // 2], 3)

    result: dict[str, Any] = {
        "sessions": sessions,
        "reps_per_session": 10,
        "live_per_session": 600,
        "runs": runs,
        "fill_db_s": round(t_fill, 2),
        "p50_s": {k: p50(v) for k, v in timings.items()},
        "max_s": {k: round(max(v), 3) for k, v in timings.items()},
        "bytes": sizes,
    }
    result["progress_over_csv_peer"] = round(
        result["p50_s"]["progress_html_csv"] / max(result["p50_s"]["csv_only_peer"], 1e-6), 1
    )
    assert math.isfinite(result["progress_over_csv_peer"])
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_report")
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), **run(args.sessions, args.runs)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
