"""Reports from the clinic database: one session, or one patient's progress over sessions.

    python -m feedback.clinic.report --db URL session SESSION_ID [--out DIR] [--pdf] [--tz ZONE]
    python -m feedback.clinic.report --db URL patient PATIENT_ID [--out DIR] [--pdf] [--tz ZONE]

Each writes a self-contained HTML file (charts drawn by matplotlib, inline SVG, a print
stylesheet for A4; opens offline) and a CSV of the same numbers: `<session>.html` +
`<session>-reps.csv`, or `<patient>-progress.html` + `<patient>-progress.csv`; with --pdf also
`<session>.pdf` / `<patient>-progress.pdf` (matplotlib's PDF backend). Times are in the clinic's
time zone: --tz (IANA name, e.g. Europe/Berlin) or VMF_REPORT_TZ, else the machine's.
Charts and their rules: feedback/clinic/charts.py; wording and thresholds: docs/reports.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import sys
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

try:
    from matplotlib.axes import Axes

    from feedback.clinic import charts
except ImportError as exc:  # the clinic logger runs without it; only the reports need it
    raise SystemExit(
        "the clinic reports need matplotlib: pip install 'vm-feedback[report]'"
    ) from exc
from feedback.clinic.db import Backend, DatabaseMissing, connect

REP_COLUMNS = (
    "period", "achieved", "rep", "time_to_band_s", "peak_pct_mvc", "mean_pct_mvc", "hold_s",
    "time_in_band_s", "vm_vl_ratio", "onset_diff_ms", "symmetry_pct",
)  # fmt: skip
PROGRESS_COLUMNS = (
    "session_id", "date", "reps_done", "reps_prescribed", "adherence_pct", "peak_pct_mvc",
    "hold_s", "vm_vl_ratio", "onset_diff_ms", "symmetry_pct", "pain_before", "pain_after",
    "record",
)  # fmt: skip
# What the HTML and PDF tables call each CSV column: plain words, units in brackets.
# (name, digits; None: text as it is)
HEADERS: dict[str, tuple[str, int | None]] = {
    "period": ("Work period", 0),
    "achieved": ("Hold reached", None),
    "rep": ("Repetition no.", 0),
    "time_to_band_s": ("Time to reach the band (s)", 2),
    "peak_pct_mvc": ("Peak (% MVC)", 0),
    "mean_pct_mvc": ("Mean (% MVC)", 0),
    "hold_s": ("Longest hold in the band (s)", 1),
    "time_in_band_s": ("Time in the band (s)", 1),
    "vm_vl_ratio": ("VM:VL ratio (1 = equal)", 2),
    "onset_diff_ms": ("Onset VL − VM (ms; + = VM first)", 0),
    "symmetry_pct": ("Left/right symmetry (%)", 0),
    "session_id": ("Session", None),
    "date": ("Date and time", None),
    "reps_done": ("Repetitions done", 0),
    "reps_prescribed": ("Repetitions prescribed", 0),
    "adherence_pct": ("Done of prescribed (%)", 0),
    "pain_before": ("Pain before (0–10)", 0),
    "pain_after": ("Pain after (0–10)", 0),
    "record": ("Clinic's copy of the session", None),
}
GLOSSARY = (
    ("% MVC", "percent of the patient's maximum voluntary contraction, measured at "
     "calibration"),
    ("VM, VL", "vastus medialis and vastus lateralis, the inner and outer thigh muscles"),
    ("VM:VL ratio", "mean VM activity divided by mean VL activity; 1 means equally active"),
    ("Onset VL − VM", "how much earlier VM switched on than VL, in milliseconds; positive "
     "means VM first"),
    ("Target band", "the range of effort the patient is asked to hold during each repetition"),
)  # fmt: skip


def clinic_zone(name: str | None = None) -> datetime.tzinfo:
    """The clinic's time zone: the name given, else VMF_REPORT_TZ, else the machine's."""
    name = name or os.environ.get("VMF_REPORT_TZ")
    if name:
        return zoneinfo.ZoneInfo(name)
    local = datetime.datetime.now().astimezone().tzinfo
    assert local is not None
    return local


def _date(t: float | None, tz: datetime.tzinfo) -> str:
    if t is None:
        return "not recorded"
    return datetime.datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z")


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(statistics.fmean(vals), 3) if vals else None


def _pain(v: int | None) -> str:
    return "not recorded" if v is None else str(v)


def _cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "–"
    if key == "achieved":
        return "yes" if value else "no"
    digits = HEADERS.get(key, (key, None))[1]
    if digits is None or not isinstance(value, int | float):
        return str(value)
    return f"{float(value):.{digits}f}"


@dataclass(frozen=True)
class Chart:
    heading: str
    caption: str  # one line under the chart: how to read it
    draw: Callable[[Axes], None]
    height_in: float = charts.HEIGHT_IN


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
    """In plain words: did every message of the session reach the clinic's database?"""
    last, missing, ended = record_gaps(db, session_id)
    tail = (
        ""
        if ended
        else " The end-of-session message has not arrived (yet): the session may still be "
        "running, or its last messages are missing too."
    )
    if not missing:
        return f"All {last} messages of this session reached the clinic's database.{tail}"
    return (
        f"INCOMPLETE: {len(missing)} of {last} messages did not reach the clinic's database "
        f"(message numbers {_spans(missing)}); the station's own session log still has them."
        f"{tail}"
    )


WINDOW_SLACK_S = 86_400.0  # live and events of a session within a day of its start and end


def session_window(info: dict[str, Any]) -> tuple[float, float]:
    """The station-clock span in which a session's live rows and events lie: the query says it,
    so PostgreSQL reads only those days' partitions (docs/storage.md)."""
    start, end = info.get("started_at"), info.get("ended_at")
    if start is None and end is None:
        return 0.0, 1e12  # the envelope's whole range of t
    first = float(start if start is not None else end)  # type: ignore[arg-type]
    last = float(end) if end is not None else first + WINDOW_SLACK_S
    return first - WINDOW_SLACK_S, last + WINDOW_SLACK_S


Points = list[tuple[float, float]]


def live_envelopes(
    db: Backend, session_id: str, t0: float, window: tuple[float, float]
) -> tuple[dict[str, Points], dict[str, list[tuple[float, float, float]]]]:
    """Each channel's envelope from the 1 Hz rows: its mean in each second (at the second's
    middle), and its minimum and maximum in that second (the shaded spread)."""
    rows = db.query(
        "SELECT second, pct_json FROM live_seconds WHERE session_id = ?"
        " AND second BETWEEN ? AND ? ORDER BY second",
        (session_id, int(window[0]), int(window[1])),
    )
    means: dict[str, Points] = {}
    spread: dict[str, list[tuple[float, float, float]]] = {}
    for second, pct in rows:
        x = second + 0.5 - t0
        for ch, (_n, lo, mean, hi) in json.loads(pct).items():
            means.setdefault(ch, []).append((x, mean))
            spread.setdefault(ch, []).append((x, lo, hi))
    return means, spread


def session_report(
    db: Backend, session_id: str, out: Path, *, tz: datetime.tzinfo | None = None,
    pdf_too: bool = False,
) -> tuple[Path, ...]:  # fmt: skip
    tz = tz or clinic_zone()
    info, reps = session_rows(db, session_id)
    target = info["settings"].get("target", {})
    band = (float(target.get("low_pct", 0)), float(target.get("high_pct", 0)))
    t0 = info["started_at"] or 0.0
    lo, hi = session_window(info)
    envelopes, spread = live_envelopes(db, session_id, t0, (lo, hi))
    stim = db.query(
        "SELECT t, type, detail_json FROM events WHERE session_id = ?"
        " AND type IN ('stim_burst', 'stim_refused') AND t BETWEEN ? AND ? ORDER BY t",
        (session_id, lo, hi),
    )
    bursts = [(t - t0, float(json.loads(d).get("amplitude_ma", 0))) for t, k, d in stim
              if k == "stim_burst"]  # fmt: skip
    refused = [t - t0 for t, k, _ in stim if k == "stim_refused"]
    periods = [int(r["period"]) for r in reps]
    achieved = [bool(r["achieved"]) for r in reps]
    hold_target = float(info["settings"].get("protocol", {}).get("hold_s", 0) or 0)
    figures = [
        Chart("Muscle activity", "The envelope of each muscle through the session, in % of "
              "its maximum; the shaded band is the target.",
              lambda ax: charts.draw_envelope(ax, envelopes, band, spread=spread)),
        Chart("Peak effort per repetition", "Highest % MVC of the target muscle in each work "
              "period; green where the patient held the band long enough.",
              lambda ax: charts.draw_per_rep_bars(
                  ax, periods, [r["peak_pct_mvc"] for r in reps], achieved,
                  title="Peak effort per repetition", y_label="% MVC", band=band,
                  floor_top=100.0)),
        Chart("Longest hold in the band", f"Seconds the effort stayed in the band without a "
              f"break, per work period{f' (asked: {hold_target:g} s)' if hold_target else ''}.",
              lambda ax: charts.draw_per_rep_bars(
                  ax, periods, [r["hold_s"] for r in reps], achieved,
                  title="Longest hold in the band", y_label="s",
                  floor_top=max(hold_target, 1.0))),
        Chart("VM:VL ratio", "Mean VM activity over mean VL activity in each work period; "
              "above 1, VM was the more active.",
              lambda ax: charts.draw_ratio(ax, periods, [r["vm_vl_ratio"] for r in reps],
                                           x_label="repetition", title="VM:VL ratio")),
        Chart("Which muscle switched on first", "VL onset minus VM onset in each work period; "
              "above 0 (green), VM switched on first.",
              lambda ax: charts.draw_onset(ax, periods, [r["onset_diff_ms"] for r in reps],
                                           x_label="repetition",
                                           title="Onset difference VL − VM")),
    ]  # fmt: skip
    if bursts or refused:
        figures.append(Chart("Stimulation", "Each burst of electrical stimulation and its "
                             "amplitude; crosses: bursts a safety check refused.",
                             lambda ax: charts.draw_stimulation(ax, bursts, refused)))  # fmt: skip
    done = sum(achieved)
    stopped = info["summary"].get("stopped_by")
    facts = {
        "Patient (pseudonym)": info["patient"],
        "Station": info["station"],
        "Exercise protocol": info["protocol"],
        "Started": _date(info["started_at"], tz),
        "Ended": _date(info["ended_at"], tz)
        + (f" ({STOPPED.get(stopped, stopped)})" if stopped else ""),
        "Repetitions done": f"{done} of {info['reps_prescribed'] or '?'} prescribed",
        "Pain before / after (0–10)": f"{_pain(info['pain_before'])} / {_pain(info['pain_after'])}",
        "Target band": f"{band[0]:g}–{band[1]:g} % MVC",
        "Stimulation": _stimulation_sentence(len(bursts), len(refused), info["settings"]),
        "Messages received": record_completeness(db, session_id),
    }
    out.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = out / f"{session_id}.html", out / f"{session_id}-reps.csv"
    title = f"Session {session_id}"
    html_path.write_text(_page(title, facts, figures, REP_COLUMNS, reps))
    _write_csv(csv_path, REP_COLUMNS, reps)
    if not pdf_too:
        return html_path, csv_path
    pdf_path = out / f"{session_id}.pdf"
    charts.write_pdf(pdf_path, title, facts, _drawn(figures), _table(REP_COLUMNS, reps), GLOSSARY)
    return html_path, csv_path, pdf_path


STOPPED = {
    "end": "the exercise was complete",
    "duration": "the set duration was over",
    "therapist_stop": "stopped by the therapist",
    "user": "stopped at the station",
    "emergency_stop": "emergency stop",
}


def _stimulation_sentence(bursts: int, refused: int, settings: dict[str, Any]) -> str:
    enabled = bool(settings.get("stimulation", {}).get("enabled"))
    if not bursts and not refused:
        return "none given" + ("" if enabled else " (stimulation was switched off)")
    text = f"{bursts} burst{'s' if bursts != 1 else ''} given"
    if refused:
        text += f", {refused} refused by a safety check"
    return text


def progress_rows(
    db: Backend, patient: str, tz: datetime.tzinfo | None = None
) -> list[dict[str, Any]]:
    tz = tz or clinic_zone()
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
        record += [] if ended else ["no end-of-session message"]
        rows.append({
            "session_id": sid,
            "date": _date(started, tz),
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


def progress_report(
    db: Backend, patient: str, out: Path, *, tz: datetime.tzinfo | None = None,
    pdf_too: bool = False,
) -> tuple[Path, ...]:  # fmt: skip
    tz = tz or clinic_zone()
    rows = progress_rows(db, patient, tz)
    if not rows:
        raise LookupError(f"no sessions of patient {patient!r} in the database")
    n = list(range(1, len(rows) + 1))

    def col(key: str) -> list[Any]:
        return [r[key] for r in rows]

    figures = [
        Chart("Peak effort", "Mean peak % MVC of the target muscle per session, with its "
              "trend. No clinically important difference is established for this measure.",
              lambda ax: charts.draw_trend(ax, n, {"mean peak": col("peak_pct_mvc")},
                                           title="Peak effort", y_label="% MVC",
                                           y_range=(0, max(100.0, *_nums(col("peak_pct_mvc")))),
                                           unit=" % MVC")),
        Chart("Longest hold in the band", "Mean of each session's longest holds, in seconds.",
              lambda ax: charts.draw_trend(ax, n, {"mean longest hold": col("hold_s")},
                                           title="Longest hold in the band", y_label="s",
                                           unit=" s")),
        Chart("VM:VL ratio", "Mean VM:VL ratio per session; above 1, VM was the more active.",
              lambda ax: charts.draw_ratio(ax, n, col("vm_vl_ratio"), x_label="session",
                                           title="VM:VL ratio")),
        Chart("Which muscle switched on first", "Mean onset difference VL − VM per session; "
              "above 0, VM switched on first.",
              lambda ax: charts.draw_onset(ax, n, col("onset_diff_ms"), x_label="session",
                                           title="Onset difference VL − VM", bars=False)),
        Chart("Repetitions done", "Done of prescribed, in %; 100 % = every repetition done.",
              lambda ax: charts.draw_trend(ax, n, {"done of prescribed": col("adherence_pct")},
                                           title="Repetitions done", y_label="%",
                                           y_range=(0, max(100.0, *_nums(col("adherence_pct")))),
                                           reference=(100.0, "all prescribed"), unit=" %")),
        Chart("Pain", f"Pain on the 0–10 scale before and after each session. Shaded: a "
              f"clinically important improvement, {charts.PAIN_MCID_POINTS:g} points or more "
              f"under the first session (Farrar et al. 2001).",
              lambda ax: charts.draw_pain(ax, n, col("pain_before"), col("pain_after"))),
    ]  # fmt: skip
    if any(v is not None for v in col("symmetry_pct")):
        figures.insert(4, Chart(
            "Left/right symmetry", "Smaller over larger peak of the two sides; 100 % = equal.",
            lambda ax: charts.draw_trend(ax, n, {"symmetry": col("symmetry_pct")},
                                         title="Left/right symmetry", y_label="%",
                                         y_range=(0, 105), reference=(100.0, "equal sides"),
                                         unit=" %")))  # fmt: skip
    facts = {"Patient (pseudonym)": patient, "Sessions": str(len(rows)),
             "First session": rows[0]["date"], "Last session": rows[-1]["date"],
             "Session numbers": "the charts number the sessions 1, 2, 3, … in date order; "
             "the table gives each one's date"}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    html_path, csv_path = out / f"{patient}-progress.html", out / f"{patient}-progress.csv"
    title = f"Progress of {patient}"
    html_path.write_text(_page(title, facts, figures, PROGRESS_COLUMNS, rows))
    _write_csv(csv_path, PROGRESS_COLUMNS, rows)
    if not pdf_too:
        return html_path, csv_path
    pdf_path = out / f"{patient}-progress.pdf"
    charts.write_pdf(pdf_path, title, facts, _drawn(figures), _table(PROGRESS_COLUMNS, rows),
                     GLOSSARY)  # fmt: skip
    return html_path, csv_path, pdf_path


def _drawn(figures: list[Chart]) -> list[tuple[str, str, Callable[[Axes], None]]]:
    return [(c.heading, c.caption, c.draw) for c in figures]


def _nums(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float)]


def _table(columns: Sequence[str], rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [HEADERS[c][0] for c in columns]
    cells = [[_cell(c, r[c]) for c in columns] for r in rows]
    if "session_id" in columns:  # the number the progress charts use for each session
        headers.insert(0, "No.")
        for i, row in enumerate(cells, 1):
            row.insert(0, str(i))
    return headers, cells


PAGE_CSS = """
body{font-family:system-ui,"DejaVu Sans",Arial,sans-serif;margin:2em;color:#111;max-width:62em}
h1{font-size:1.6em}h2{font-size:1.15em;margin:1.2em 0 .2em}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 7px}
.facts th{text-align:left;background:#f3f3f3;font-weight:600}.facts td{text-align:left}
.numbers th{background:#f3f3f3;font-weight:600;vertical-align:bottom}
.numbers td{text-align:right;white-space:nowrap}.scroll{overflow-x:auto}.numbers{font-size:.9em}
figure{margin:0 0 1em}figcaption{color:#333;font-size:.92em}svg{max-width:100%;height:auto}
dl.glossary dt{font-weight:600}dl.glossary dd{margin:0 0 .4em 1.5em}
@media print{
 @page{size:A4;margin:14mm 12mm}
 body{margin:0;font-size:9.5pt;max-width:none}
 figure,tr,.facts{break-inside:avoid}
 h2{break-after:avoid}
 .numbers{font-size:7pt}.scroll{overflow:visible}.numbers td{white-space:normal}
 a{color:inherit;text-decoration:none}
}
"""


def _page(
    title: str,
    facts: dict[str, str],
    figures: list[Chart],
    columns: Sequence[str],
    rows: list[dict[str, Any]],
) -> str:
    fact_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
                        for k, v in facts.items())  # fmt: skip
    svgs = []
    for i, chart in enumerate(figures):
        fig, ax = charts.figure(height_in=chart.height_in)
        chart.draw(ax)
        ax.set_title("", loc="left")  # the heading above says it (the PDF keeps this title)
        svgs.append(
            f"<figure><h2>{escape(chart.heading)}</h2>{charts.svg(fig, f'c{i}-{title}')}"
            f"<figcaption>{escape(chart.caption)}</figcaption></figure>"
        )
    headers, cells = _table(columns, rows)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in cells)
    glossary = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in GLOSSARY)
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><table class='facts'>{fact_rows}</table>\n"
        + "\n".join(svgs)
        + f"\n<h2>The numbers</h2><div class='scroll'><table class='numbers'><tr>{head}</tr>"
        f"{body}</table></div>"
        f"<h2>Words used</h2><dl class='glossary'>{glossary}</dl></body></html>\n"
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
    p.add_argument("--pdf", action="store_true", help="also write a PDF (A4)")
    p.add_argument("--tz", metavar="ZONE", help="the clinic's time zone, e.g. Europe/Berlin "
                   "(default: VMF_REPORT_TZ, else this machine's)")  # fmt: skip
    p.add_argument("kind", choices=["session", "patient"])
    p.add_argument("id", help="session id or pseudonymous patient id")
    args = p.parse_args(argv)
    try:
        tz = clinic_zone(args.tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        print(f"report: unknown time zone {args.tz!r} (an IANA name such as Europe/Berlin)",
              file=sys.stderr)  # fmt: skip
        return 2
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
        paths = make(db, args.id, args.out, tz=tz, pdf_too=args.pdf)
    except LookupError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
