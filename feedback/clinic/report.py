"""Reports from the clinic database: one session, or one patient's progress over sessions.

    python -m feedback.clinic.report --db URL session SESSION_ID [--out DIR]
    python -m feedback.clinic.report --db URL patient PATIENT_ID [--out DIR]

Each writes a self-contained HTML file (inline SVG charts) and a CSV of the same numbers:
`<session>.html` + `<session>-reps.csv`, or `<patient>-progress.html` + `<patient>-progress.csv`.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from feedback.clinic.db import Backend, DatabaseMissing, connect
from feedback.clinic.svg import bar_chart, line_chart

REP_COLUMNS = (
    "period", "achieved", "rep", "time_to_band_s", "peak_pct_mvc", "mean_pct_mvc", "hold_s",
    "time_in_band_s", "vm_vl_ratio", "onset_diff_ms", "symmetry_pct",
)  # fmt: skip
PROGRESS_COLUMNS = (
    "session_id", "date", "reps_done", "reps_prescribed", "adherence_pct", "peak_pct_mvc",
    "hold_s", "vm_vl_ratio", "onset_diff_ms", "symmetry_pct", "pain_before", "pain_after",
    "record",
)  # fmt: skip


def _date(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(statistics.fmean(vals), 3) if vals else None


def _pain(v: int | None) -> str:
    return "not recorded" if v is None else str(v)


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def session_rows(db: Backend, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    found = db.query(
        "SELECT patient, station, protocol, started_at, ended_at, reps_prescribed, pain_before,"
        " pain_after, settings_json, summary_json FROM sessions WHERE session_id = ?",
        (session_id,),
    )
    if not found:
        raise LookupError(f"no session {session_id!r} in the database")
    keys = ("patient", "station", "protocol", "started_at", "ended_at", "reps_prescribed",
            "pain_before", "pain_after", "settings", "summary")  # fmt: skip
    info = dict(zip(keys, found[0], strict=True))
    info["settings"] = json.loads(info["settings"] or "{}")
    info["summary"] = json.loads(info["summary"] or "{}")
    reps = [
        dict(zip(REP_COLUMNS, r, strict=True))
        for r in db.query(
            f"SELECT {', '.join(REP_COLUMNS)} FROM reps WHERE session_id = ? ORDER BY period",
            (session_id,),
        )
    ]
    return info, reps


def _spans(ids: list[int]) -> str:
    """[3, 4, 5, 9] -> "3–5, 9"."""
    spans: list[list[int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in spans)


def record_gaps(db: Backend, session_id: str) -> tuple[int, list[int], bool]:
    """The clinic's copy of a session against its numbering (lossless messages count 1, 2, 3,
    ... without holes, docs/mqtt.md): the highest msg_id received, the ones missing below it
    (messages that never reached the logger; the station's own session log still has them),
    and whether the session_end arrived (without it, later messages may be missing too)."""
    got = sorted(
        int(r[0])
        for r in db.query(
            "SELECT msg_id FROM messages WHERE session_id = ? AND type <> 'live' AND msg_id > 0",
            (session_id,),
        )
    )
    ended = bool(
        db.query("SELECT 1 FROM messages WHERE session_id = ? AND type = 'session_end'",
                 (session_id,))
    )  # fmt: skip
    last = got[-1] if got else 0
    return last, sorted(set(range(1, last + 1)) - set(got)), ended


def record_completeness(db: Backend, session_id: str) -> str:
    last, missing, ended = record_gaps(db, session_id)
    tail = "" if ended else "; no session_end yet (later messages may be missing too)"
    if not missing:
        return f"complete: messages 1–{last}{tail}"
    return (
        f"INCOMPLETE: {len(missing)} of {last} messages missing (msg_id {_spans(missing)}); "
        f"the station's session log has them{tail}"
    )


def session_report(db: Backend, session_id: str, out: Path) -> tuple[Path, Path]:
    info, reps = session_rows(db, session_id)
    target = info["settings"].get("target", {})
    band = (float(target.get("low_pct", 0)), float(target.get("high_pct", 0)))
    t0 = info["started_at"] or 0.0
    live = db.query(
        "SELECT t, pct_mvc_json FROM live WHERE session_id = ? ORDER BY t", (session_id,)
    )
    envelopes: dict[str, list[tuple[float, float]]] = {}
    for t, pct in live:
        for ch, v in json.loads(pct).items():
            envelopes.setdefault(ch, []).append((t - t0, v))
    stim = db.query(
        "SELECT t, type, detail_json FROM events WHERE session_id = ?"
        " AND type IN ('stim_burst', 'stim_refused') ORDER BY t",
        (session_id,),
    )
    labels = [str(r["period"]) for r in reps]
    charts = [
        line_chart(envelopes, title="Envelope (% MVC), target band shaded", x_label="s",
                   y_label="% MVC", band=band),
        bar_chart([(lb, _num(r["peak_pct_mvc"]), bool(r["achieved"])) for lb, r in zip(
            labels, reps, strict=True)], title="Peak % MVC per repetition (green: hold reached)",
            y_label="% MVC", band=band),
        bar_chart([(lb, _num(r["hold_s"]), bool(r["achieved"])) for lb, r in zip(
            labels, reps, strict=True)], title="Longest hold in band per repetition",
            y_label="s"),
        line_chart({"VM:VL": [(r["period"], _num(r["vm_vl_ratio"])) for r in reps]},
                   title="VM:VL ratio per repetition", x_label="repetition", y_label="ratio",
                   reference=1.0, markers=True),
        bar_chart([(lb, _num(r["onset_diff_ms"]), True) for lb, r in zip(
            labels, reps, strict=True)], title="Onset difference VL − VM (positive: VM first)",
            y_label="ms", reference=0.0),
        line_chart({"burst mA": [(t - t0, float(json.loads(d).get("amplitude_ma", 0)))
                                 for t, kind, d in stim if kind == "stim_burst"]},
                   title=f"Stimulation: {sum(k == 'stim_burst' for _, k, _ in stim)} bursts, "
                   f"{sum(k == 'stim_refused' for _, k, _ in stim)} refused",
                   x_label="s", y_label="mA", markers=True),
    ]  # fmt: skip
    done = sum(1 for r in reps if r["achieved"])
    facts = {
        "Patient": info["patient"],
        "Station": info["station"],
        "Protocol": info["protocol"],
        "Started": _date(info["started_at"]),
        "Ended": f"{_date(info['ended_at'])} ({info['summary'].get('stopped_by', '?')})",
        "Repetitions": f"{done} of {info['reps_prescribed'] or '?'}",
        "Pain before / after (0–10)": f"{_pain(info['pain_before'])} / {_pain(info['pain_after'])}",
        "Target band": f"{band[0]:g}–{band[1]:g} % MVC",
        "Clinic record": record_completeness(db, session_id),
    }
    out.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = out / f"{session_id}.html", out / f"{session_id}-reps.csv"
    html_path.write_text(_page(f"Session {session_id}", facts, charts, REP_COLUMNS, reps))
    _write_csv(csv_path, REP_COLUMNS, reps)
    return html_path, csv_path


def progress_rows(db: Backend, patient: str) -> list[dict[str, Any]]:
    sessions = db.query(
        "SELECT session_id, started_at, reps_prescribed, pain_before, pain_after FROM sessions"
        " WHERE patient = ? ORDER BY started_at",
        (patient,),
    )
    rows = []
    for sid, started, prescribed, pain_before, pain_after in sessions:
        reps = db.query(
            "SELECT achieved, peak_pct_mvc, hold_s, vm_vl_ratio, onset_diff_ms, symmetry_pct"
            " FROM reps WHERE session_id = ?",
            (sid,),
        )
        done = sum(int(r[0]) for r in reps)
        _, missing, ended = record_gaps(db, sid)
        record = [f"{len(missing)} messages missing"] if missing else []
        record += [] if ended else ["not ended"]
        rows.append({
            "session_id": sid,
            "date": _date(started),
            "reps_done": done,
            "reps_prescribed": prescribed,
            "adherence_pct": round(100 * done / prescribed, 1) if prescribed else None,
            "peak_pct_mvc": _mean([r[1] for r in reps]),
            "hold_s": _mean([r[2] for r in reps]),
            "vm_vl_ratio": _mean([r[3] for r in reps]),
            "onset_diff_ms": _mean([r[4] for r in reps]),
            "symmetry_pct": _mean([r[5] for r in reps]),
            "pain_before": pain_before,
            "pain_after": pain_after,
            "record": "; ".join(record) or "complete",
        })  # fmt: skip
    return rows


def progress_report(db: Backend, patient: str, out: Path) -> tuple[Path, Path]:
    rows = progress_rows(db, patient)
    if not rows:
        raise LookupError(f"no sessions of patient {patient!r} in the database")
    n = list(range(1, len(rows) + 1))

    def trend(key: str) -> list[tuple[float, float]]:
        return [(i, _num(r[key])) for i, r in zip(n, rows, strict=True)]

    charts = [
        line_chart({"peak % MVC": trend("peak_pct_mvc")}, title="Mean peak % MVC per session",
                   x_label="session", y_label="% MVC", markers=True),
        line_chart({"hold s": trend("hold_s")}, title="Mean longest hold per session",
                   x_label="session", y_label="s", markers=True),
        line_chart({"VM:VL": trend("vm_vl_ratio")}, title="Mean VM:VL ratio per session",
                   x_label="session", y_label="ratio", reference=1.0, markers=True),
        line_chart({"VL − VM": trend("onset_diff_ms")}, title="Mean onset difference per session",
                   x_label="session", y_label="ms", reference=0.0, markers=True),
        line_chart({"symmetry": trend("symmetry_pct")}, title="Left/right symmetry",
                   x_label="session", y_label="%", markers=True),
        line_chart({"adherence": trend("adherence_pct")}, title="Adherence (done / prescribed)",
                   x_label="session", y_label="%", markers=True),
        line_chart({"before": trend("pain_before"), "after": trend("pain_after")},
                   title="Pain (0–10) before and after each session", x_label="session",
                   y_label="pain", markers=True),
    ]  # fmt: skip
    facts = {"Patient": patient, "Sessions": str(len(rows)),
             "From": rows[0]["date"], "To": rows[-1]["date"]}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = out / f"{patient}-progress.html", out / f"{patient}-progress.csv"
    html_path.write_text(_page(f"Progress of {patient}", facts, charts, PROGRESS_COLUMNS, rows))
    _write_csv(csv_path, PROGRESS_COLUMNS, rows)
    return html_path, csv_path


def _page(
    title: str,
    facts: dict[str, str],
    charts: list[str],
    columns: Sequence[str],
    rows: list[dict[str, Any]],
) -> str:
    fact_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                        for k, v in facts.items())  # fmt: skip
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{escape('' if r[c] is None else str(r[c]))}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "svg{display:block;margin:1em 0}</style></head><body>"
        f"<h1>{escape(title)}</h1><table>{fact_rows}</table>\n"
        + "\n".join(charts)
        + f"\n<h2>Numbers</h2><table><tr>{head}</tr>{body}</table></body></html>\n"
    )


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _is_clinic_db(db: Backend) -> bool:
    try:
        db.query("SELECT count(*) FROM sessions WHERE 1 = 0")
    except Exception:  # sqlite3 and psycopg each have their own "no such table" error
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m feedback.clinic.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", required=True, metavar="URL", help="postgresql://... or a SQLite path")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for the files")
    p.add_argument("kind", choices=["session", "patient"])
    p.add_argument("id", help="session id or pseudonymous patient id")
    args = p.parse_args(argv)
    try:
        db = connect(args.db, must_exist=True)
    except (DatabaseMissing, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    try:
        if not _is_clinic_db(db):
            print(
                f"report: {args.db} is not a clinic database (no sessions table); "
                "point --db at the clinic logger's database",
                file=sys.stderr,
            )
            return 2
        make = session_report if args.kind == "session" else progress_report
        html_path, csv_path = make(db, args.id, args.out)
    except LookupError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"{html_path}\n{csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
