"""One definition per metric: one simulated session, every output, the same number for a rep.

The session runs as a clinic runs it (`sim?speed=max`, a real Mosquitto, the clinic logger into
SQLite, `--report`, `--record`), with the dashboard's feed and the terminal view attached as the
session attaches them. For every achieved rep its metrics (docs/metrics.md) are read back from:
the JSON report's contraction, the rep MQTT message, the clinic database row, the clinic HTML and
CSV reports, the terminal view's last contraction (and the line it prints), the dashboard's rep
table row and the record's contraction annotation. Each output is compared at the precision it
shows. Negative controls: an output that recomputes a metric its own way (the clinic report
with a 10 % MVC onset rule; the rep message with time to band from the work cue) is caught.
"""

from __future__ import annotations

import asyncio
import copy
import csv
import json
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from html import unescape
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from rich.console import Console

from feedback import app
from feedback.clinic import report as clinic_report
from feedback.clinic.db import connect
from feedback.dashboard.feed import DashboardFeed, Header, RepRow
from feedback.outputs.base import Listener
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.terminal import contraction_line
from feedback.outputs.view import ViewOutput
from feedback.processing.metrics import Contraction
from feedback.session import Session
from tests.clinic.conftest import (  # noqa: F401 (clinic_broker: a fixture)
    ClinicBroker,
    clinic_broker,
    running_logger,
    station_settings,
    wait_until,
)
from tests.clinic.test_logger import session_ended

# (rep message / clinic column, contraction field in the JSON report, HTML header digits)
METRICS = (
    ("onset_diff_ms", "vm_vl_onset_ms"),
    ("time_to_band_s", "time_to_band_s"),
    ("peak_pct_mvc", "peak_pct"),
    ("mean_pct_mvc", "mean_pct"),
    ("hold_s", "longest_hold_s"),
    ("time_in_band_s", "hold_in_band_s"),
    ("vm_vl_ratio", "vm_vl_ratio"),
)


@dataclass
class Outputs:
    report: dict[str, Any]
    rep_messages: list[dict[str, Any]]
    db_rows: list[dict[str, Any]]
    csv_rows: list[dict[str, str]]
    html_rows: list[dict[str, str]]
    views: list[Contraction]  # the terminal view's last contraction, each one it showed
    view_lines: dict[int, str]  # contraction number → the line the terminal prints
    feed_rows: list[RepRow]
    record_events: list[dict[str, str]]
    session_end: dict[str, Any] = field(default_factory=dict)
    clinic: tuple[str, str] = ("", "")  # the clinic database URL and the session id


def clinic_files(
    db_url: str, sid: str, out: Path
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The clinic's session report as a clinician gets it: its CSV rows and HTML table rows."""
    out.mkdir()
    db = connect(db_url)
    try:
        html, csv_path = clinic_report.session_report(db, sid, out)[:2]
    finally:
        db.close()
    with csv_path.open() as f:
        return list(csv.DictReader(f)), _html_rows(html)


def _attach(session: Session, views: list[Contraction], lines: dict[int, str]) -> DashboardFeed:
    """The dashboard feed and a terminal watcher, wired as feedback.dashboard.link wires them."""
    info = session.device.info
    feed = DashboardFeed(Header(channels=info.channels), info.rate_hz)
    session.add_output(Listener(on_tick=feed.add, on_rep=feed.add_rep))

    view = next(o.view for o in session.outputs if isinstance(o, ViewOutput))

    def watch(_: object) -> None:
        c = view.last_contraction
        if c is not None and (not views or views[-1] is not c):
            views.append(c)
            lines[c.number] = contraction_line(c)

    session.add_output(Listener(on_tick=watch))
    return feed


def _html_rows(path: Path) -> list[dict[str, str]]:
    page = path.read_text()
    table = page.split("class='numbers'", 1)[1].split("</table>", 1)[0]
    heads = [unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
    rows = re.findall(r"<tr>((?:<td>.*?</td>)+)</tr>", table)
    return [
        dict(zip(heads, [unescape(c) for c in re.findall(r"<td>(.*?)</td>", r)], strict=True))
        for r in rows
    ]


async def run_session(
    broker: ClinicBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Outputs:
    station = "st-" + secrets.token_hex(3)
    settings = station_settings(station)
    db_url = str(tmp_path / "clinic.db")
    views: list[Contraction] = []
    lines: dict[int, str] = {}
    feeds: list[DashboardFeed] = []
    run = Session.run

    async def attached(self: Session, stop: asyncio.Event) -> Any:
        feeds.append(_attach(self, views, lines))
        return await run(self, stop)

    monkeypatch.setattr(Session, "run", attached)
    messages: list[dict[str, Any]] = []
    options = app.RunOptions(
        device="sim?speed=max",
        duration_s=None,
        db=str(tmp_path / "station.db"),
        broker=broker.url,
        report=tmp_path / "report.json",
        live_view=False,
        record=tmp_path / "record",
    )
    async with running_logger(BrokerAccess.from_url(broker.url), db_url):
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"sub-{station}") as sub:
            await sub.subscribe(f"vmf/v1/{settings.session.clinic}/{station}/#", qos=1)
            ended = asyncio.Event()

            async def collect() -> None:
                async for msg in sub.messages:
                    if str(msg.topic).endswith(("/stream", "/live")):
                        continue
                    body = json.loads(msg.payload)  # type: ignore[arg-type,unused-ignore]
                    messages.append(body)
                    if body["type"] == "session_end":
                        ended.set()

            collector = asyncio.create_task(collect())
            with open(os.devnull, "w") as devnull:
                report = await app.run(settings, options, console=Console(file=devnull))
            await asyncio.wait_for(ended.wait(), 10)
            collector.cancel()
        sid = report["session_id"]
        await wait_until(lambda: session_ended(db_url, sid), 10, "session_end in the clinic db")
    db = connect(db_url)
    try:
        _, db_rows = clinic_report.session_rows(db, sid)
    finally:
        db.close()
    csv_rows, html_rows = clinic_files(db_url, sid, tmp_path / "clinic-report")
    with (tmp_path / "record.events.csv").open() as f:
        events = [e for e in csv.DictReader(f) if e["kind"] == "contraction"]
    (end,) = [m for m in messages if m["type"] == "session_end"]
    return Outputs(
        report=report,
        rep_messages=[m for m in messages if m["type"] == "rep"],
        db_rows=db_rows,
        csv_rows=csv_rows,
        html_rows=html_rows,
        clinic=(db_url, sid),
        views=views,
        view_lines=lines,
        feed_rows=list(feeds[0].reps),
        record_events=events,
        session_end=end,
    )


def _same(a: Any, b: Any, digits: int = 4) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 0.6 * 10**-digits


def disagreements(o: Outputs) -> list[str]:
    """Every place a rep's metric differs from its one computation (empty: all agree)."""
    bad: list[str] = []
    contractions = {c["number"]: c for c in o.report["contraction_metrics"]}
    views = {c.number: c for c in o.views}
    db = {r["period"]: r for r in o.db_rows}
    csv_rows = {int(r["period"]): r for r in o.csv_rows}
    html = {int(r["Work period"]): r for r in o.html_rows}
    feed = {r.rep: r for r in o.feed_rows}
    record = {int(e["detail"].split()[0][1:]): e["detail"] for e in o.record_events}
    achieved = [m for m in o.rep_messages if m["achieved"]]
    if not achieved:
        return ["no achieved rep to compare"]
    for m in achieved:
        n, period = m["contraction"], m["period"]
        if n is None:
            bad.append(f"rep {m['rep']}: no contraction paired")
            continue
        c, v, row = contractions[n], views[n], db[period]
        for rep_key, c_key in METRICS:
            truth = c[c_key]
            places = {
                "rep message": m[rep_key],
                "clinic db": row[rep_key],
                "clinic csv": None
                if csv_rows[period][rep_key] == ""
                else csv_rows[period][rep_key],
                "terminal view": getattr(v, c_key),
            }
            for where, value in places.items():
                if not _same(truth, value):
                    bad.append(f"rep {m['rep']} {rep_key}: report {truth} vs {where} {value}")
            head = clinic_report.HEADERS[rep_key][0]
            shown = html[period][head]
            if shown != clinic_report._cell(rep_key, truth):
                bad.append(f"rep {m['rep']} {rep_key}: report {truth} vs clinic html {shown}")
        r = feed[m["rep"]]
        for where, value, truth in (
            ("dashboard time to band", r.time_to_band_s, c["time_to_band_s"]),
            ("dashboard peak", r.peak_pct_mvc, c["peak_pct"]),
            ("dashboard VM:VL", r.vm_vl_ratio, c["vm_vl_ratio"]),
        ):
            if not _same(truth, value):
                bad.append(f"rep {m['rep']}: report {truth} vs {where} {value}")
        line = o.view_lines[n]
        if f"strongest {c['peak_pct']:.0f} % MVC" not in line:
            bad.append(f"rep {m['rep']}: terminal says {line!r}, peak {c['peak_pct']}")
        note = record[n]
        onset = "-" if c["vm_vl_onset_ms"] is None else f"{c['vm_vl_onset_ms']:.0f}"
        hold = "-" if c["longest_hold_s"] is None else f"{c['longest_hold_s']:.2f}"
        for text in (
            f"peak {c['peak_pct']:.0f}%MVC",
            f"VM-VL {onset}ms",
            f"hold {hold}s",
            f"in band {c['hold_in_band_s']:.2f}s",
        ):
            if text not in note:
                bad.append(f"rep {m['rep']}: record says {note!r}, not {text!r}")
    return bad


async def test_every_output_shows_the_same_rep_metrics(
    clinic_broker: ClinicBroker,  # noqa: F811 (the fixture, imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    o = await run_session(clinic_broker, tmp_path, monkeypatch)
    assert [m["rep"] for m in o.rep_messages if m["achieved"]] == [1, 2, 3]
    assert disagreements(o) == []
    # The simulator's VL starts 30 ms after VM: the one onset difference is near it.
    onsets = [m["onset_diff_ms"] for m in o.rep_messages if m["achieved"]]
    assert all(15 <= x <= 45 for x in onsets), onsets

    # session_end cannot count its own delivery: it says how many messages came before it.
    summary, end = o.session_end["summary"], o.session_end
    assert "mqtt_published" not in summary
    assert summary["messages_before_end"] == end["msg_id"] - 1
    assert o.report["mqtt_published"] >= end["msg_id"] and o.report["mqtt_flushed"]

    # Negative control 1: the clinic report computing the onset difference its own way (a
    # threshold rule; here the old 10 % MVC rule's typical shift, +27 ms on the simulator,
    # patched into the report's reading of its rows) is caught in its CSV and HTML, and only there.
    rows = clinic_report.session_rows

    def own_rule(db: Any, sid: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        info, reps = rows(db, sid)
        for r in reps:
            if r["onset_diff_ms"] is not None:
                r["onset_diff_ms"] += 27.0
        return info, reps

    with monkeypatch.context() as m:
        m.setattr(clinic_report, "session_rows", own_rule)
        bad = copy.deepcopy(o)
        bad.csv_rows, bad.html_rows = clinic_files(*o.clinic, tmp_path / "own-rule")
    found = disagreements(bad)
    assert len(found) == 3 * 2, found
    assert all("onset_diff_ms" in f and "clinic " in f for f in found), found

    # Negative control 2: the rep table's old "% MVC when the hold was reached" is caught.
    bad = copy.deepcopy(o)
    bad.feed_rows = [replace(r, peak_pct_mvc=r.peak_pct_mvc * 0.8) for r in bad.feed_rows]
    found = disagreements(bad)
    assert len(found) == 3 and all("dashboard peak" in f for f in found), found

    # Negative control 3: the rep's time to band from the work cue (the exercise's own clock,
    # 0.2-0.4 s later on the simulator) instead of from the contraction's onset: the message and
    # everything the clinic makes of it (db, CSV, HTML) disagree with the report and the view.
    bad = copy.deepcopy(o)
    key, head = "time_to_band_s", clinic_report.HEADERS["time_to_band_s"][0]
    for rows in (bad.rep_messages, bad.db_rows):
        for r in rows:
            if r[key] is not None:
                r[key] += 0.3
    for r in bad.csv_rows:
        r[key] = r[key] and str(float(r[key]) + 0.3)
    for h in bad.html_rows:
        if h[head] != "–":
            h[head] = clinic_report._cell(key, float(h[head]) + 0.3)
    found = disagreements(bad)
    assert len(found) == 3 * 4 and all(key in f for f in found), found
