"""Reports from a clinic database filled the real way: sessions through Mosquitto and the logger."""

from __future__ import annotations

import csv
import re
import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path

import pytest
from pypdf import PdfReader

from bench.bench_report import fill
from feedback.clinic import charts, report
from feedback.clinic.db import connect
from feedback.outputs.broker_access import BrokerAccess
from tests.clinic.conftest import (
    ClinicBroker,
    run_station,
    running_logger,
    station_settings,
    wait_until,
)
from tests.clinic.test_logger import session_ended


async def two_sessions(broker: ClinicBroker, db_url: str, tmp_path: Path) -> list[str]:
    ids = []
    async with running_logger(BrokerAccess.from_url(broker.url), db_url):
        for pain, effort in ((6, 45.0), (3, 50.0)):
            settings = station_settings(
                "st-r",
                **{"session.pain_before": pain, "simulator.contraction_pct": effort},
            )
            rep = await run_station(settings, broker.url, tmp_path, "sim?speed=max")
            ids.append(rep["session_id"])
            await wait_until(lambda: session_ended(db_url, ids[-1]), 10, "session_end")
    return ids


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_session_and_progress_reports(
    backend: str, clinic_broker: ClinicBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db_url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else str(tmp_path / "clinic.db")
    )
    first, second = await two_sessions(clinic_broker, db_url, tmp_path)
    db = connect(db_url)
    db.execute("UPDATE sessions SET pain_after = 2 WHERE session_id = ?", (second,))
    out = tmp_path / "reports"
    assert report.main(["--db", db_url, "--out", str(out), "session", first]) == 0
    html = (out / f"{first}.html").read_text()
    assert html.count("<svg") == 5 and "P-0001" in html  # no stimulation: no stimulation chart
    assert "6 / not recorded" in html and "None" not in html  # no pain score after session 1
    assert "Messages received" in html and "messages of this session reached the clinic" in html
    assert "none given (stimulation was switched off)" in html
    rows = list(csv.DictReader((out / f"{first}-reps.csv").open()))
    assert [r["period"] for r in rows] == ["1", "2", "3"]
    assert all(30 < float(r["peak_pct_mvc"]) < 70 for r in rows if r["achieved"] == "1")

    assert report.main(["--db", db_url, "--out", str(out), "patient", "P-0001"]) == 0
    progress = list(csv.DictReader((out / "P-0001-progress.csv").open()))
    assert [p["session_id"] for p in progress] == [first, second]
    assert [(p["pain_before"], p["pain_after"]) for p in progress] == [("6", ""), ("3", "2")]
    assert float(progress[1]["peak_pct_mvc"]) > float(progress[0]["peak_pct_mvc"])  # 50 vs 45 %
    assert all(float(p["adherence_pct"]) > 60 for p in progress)
    assert (out / "P-0001-progress.html").read_text().count("<svg") == 6  # no symmetry: 1 side
    assert report.main(["--db", db_url, "session", "S-none"]) == 1

    # Messages that never reached the logger (as after a broker restart, docs/mqtt.md) and a
    # session that has not ended: the report says what is missing instead of looking complete.
    (end_id,) = db.query(
        "SELECT msg_id FROM messages WHERE session_id = ? AND type = 'session_end'", (second,)
    )[0]
    db.execute(
        "DELETE FROM messages WHERE session_id = ? AND msg_id IN (3, 4, 5, 9, ?)",
        (second, end_id),
    )
    (last,) = db.query("SELECT max(msg_id) FROM messages WHERE session_id = ?", (second,))[0]
    gone = [i for i in (3, 4, 5, 9, end_id) if i < last]  # a lost tail cannot be seen
    assert report.main(["--db", db_url, "--out", str(out), "session", second]) == 0
    html = (out / f"{second}.html").read_text()
    assert f"INCOMPLETE: {len(gone)} of {last} messages did not reach" in html
    assert report._spans(gone) in html and "message numbers 3–5, 9" in html
    assert report.main(["--db", db_url, "--out", str(out), "patient", "P-0001"]) == 0
    progress = list(csv.DictReader((out / "P-0001-progress.csv").open()))
    assert [p["record"] for p in progress] == [
        "complete",
        f"{len(gone)} messages missing; no end-of-session message",
    ]
    assert "The end-of-session message has not arrived" in html


def test_missing_or_foreign_database_is_a_clear_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexist.sqlite3"
    for url in (str(missing), f"sqlite:///{missing}"):
        assert report.main(["--db", url, "--out", str(tmp_path), "session", "X"]) == 2
        assert "no database file" in capsys.readouterr().err
        assert not missing.exists()
    foreign = tmp_path / "other.sqlite3"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    assert report.main(["--db", str(foreign), "--out", str(tmp_path), "patient", "P-1"]) == 2
    assert "not a clinic database" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.html"))


# --- the charts and the page, on a patient of 30 sessions (filled through the logger's store) --

COUNT_HEADERS = {"No.", "Work period", "Repetition no.", "Hold reached", "Session",
                 "Date and time", "Repetitions done", "Repetitions prescribed",
                 "Clinic's copy of the session"}  # fmt: skip
UNIT = re.compile(r"\((s|% MVC|ms[^)]*|%|0–10|1 = equal)\)")
SNAKE = re.compile(r"\b[a-z]+_[a-z_]+\b")


@pytest.fixture(scope="module")
def thirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("thirty")
    db = str(tmp / "clinic.db")
    fill(db, sessions=30)
    out = tmp / "out"
    for kind, ident in (("patient", "P-0030"), ("session", FIRST)):
        assert report.main(["--db", db, "--out", str(out), "--pdf", "--tz", "Europe/Berlin",
                            kind, ident]) == 0  # fmt: skip
    return db, out


FIRST = "S20260101-000000-abcdef"


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring("<svg" + part.split("</svg>")[0] + "</svg>")
            for part in html.split("<svg")[1:]]  # fmt: skip


def ticks(svg: ET.Element, axis: str) -> list[float]:
    """The tick labels of one axis ("x" or "y") as numbers, as matplotlib wrote them."""
    ns = "{http://www.w3.org/2000/svg}"
    out = []
    for g in svg.iter(f"{ns}g"):
        if g.get("id", "").startswith(f"{axis}tick_"):
            for t in g.iter(f"{ns}text"):
                if t.text and t.text.strip():
                    out.append(float(t.text.replace("−", "-")))
    return out


def counts_are_integers(values: list[float]) -> bool:
    return bool(values) and all(v == int(v) for v in values)


def test_count_axes_have_integer_ticks(thirty: tuple[str, Path]) -> None:
    _, out = thirty
    session = svgs((out / f"{FIRST}.html").read_text())
    progress = svgs((out / "P-0030-progress.html").read_text())
    assert len(session) == 6 and len(progress) == 6  # 10 stimulation bursts: their chart too
    for svg in session[1:5] + progress:  # per repetition and per session
        assert counts_are_integers(ticks(svg, "x")), ticks(svg, "x")
    pain = progress[-1]
    assert counts_are_integers(ticks(pain, "y")) and max(ticks(pain, "y")) == 10
    # negative control: matplotlib's default locator on 3 repetitions gives 1.25, 1.5, ...
    fig, ax = charts.figure()
    ax.bar([1, 2, 3], [40.0, 50.0, 45.0])
    assert not counts_are_integers(ticks(ET.fromstring(charts.svg(fig, "x")), "x"))


def test_ratio_axis_does_not_magnify_noise() -> None:
    def ylim(values: list[float | None]) -> tuple[float, float]:
        _fig, ax = charts.figure()
        charts.draw_ratio(ax, list(range(1, len(values) + 1)), values, x_label="x", title="t")
        lo, hi = ax.get_ylim()
        return round(lo, 3), round(hi, 3)

    noise = [0.987, 1.02, 1.001, 0.995, 1.01]
    assert ylim(noise) == (0.5, 1.5)  # a 3 % wobble stays a flat line around 1
    assert ylim([0.3, 1.0, 1.9]) == (0.0, 2.0)  # real extremes widen the scale, in halves
    assert ylim([None, None]) == (0.5, 1.5)
    # negative control: an axis fitted to the data (what the old charts did) zooms onto noise
    _fig, ax = charts.figure()
    ax.plot(range(5), noise)
    lo, hi = ax.get_ylim()
    assert hi - lo < 0.1


def test_page_speaks_plain_words_with_units_and_local_time(thirty: tuple[str, Path]) -> None:
    _, out = thirty
    for name in (f"{FIRST}.html", "P-0030-progress.html"):
        html = (out / name).read_text()
        text = re.sub(r"<svg.*?</svg>|<style>.*?</style>|<[^>]+>", " ", html, flags=re.S)
        assert not SNAKE.findall(text.replace(FIRST, "")), SNAKE.findall(text)[:5]
        numbers = html.split("class='numbers'")[1].split("</tr>")[0]
        headers = [unescape(h) for h in re.findall(r"<th>(.*?)</th>", numbers)]
        measured = [h for h in headers if h not in COUNT_HEADERS]
        assert measured and all(UNIT.search(h) for h in measured), measured
        assert "CEST" in html or "CET" in html  # Europe/Berlin, not UTC
        assert "UTC" not in text
        assert "@page{size:A4" in html and "@media print" in html
        assert "Words used" in html and "msg_id" not in text
    progress = (out / "P-0030-progress.html").read_text()
    assert "Farrar" in progress and "important improvement" in progress
    session = (out / f"{FIRST}.html").read_text()
    assert "10 bursts given" in session and "<h2>Stimulation</h2>" in session


def test_pdf_opens_with_every_chart_and_the_numbers(thirty: tuple[str, Path]) -> None:
    _, out = thirty
    for name, title, pages in (("P-0030-progress.pdf", "Progress of P-0030", 4),
                               (f"{FIRST}.pdf", f"Session {FIRST}", 4)):  # fmt: skip
        reader = PdfReader(out / name)
        assert len(reader.pages) >= pages
        text = "".join(page.extract_text() for page in reader.pages)
        assert title in text and "the numbers" in text
        assert reader.pages[0].mediabox.width == pytest.approx(595, abs=2)  # A4 portrait
    if shutil.which("pdftoppm"):
        pdf = str(out / "P-0030-progress.pdf")
        subprocess.run(["pdftoppm", "-r", "30", "-png", "-f", "1", "-l", "2", pdf,
                        str(out / "page")], check=True)  # fmt: skip
        assert len(list(out.glob("page-*.png"))) == 2


def test_unknown_time_zone_is_a_clear_error(
    thirty: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, out = thirty
    assert report.main(["--db", db, "--out", str(out), "--tz", "Mars/Olympus", "patient",
                        "P-0030"]) == 2  # fmt: skip
    assert "unknown time zone" in capsys.readouterr().err
    assert report.main(["--db", db, "--out", str(out / "ny"), "--tz", "America/New_York",
                        "patient", "P-0030"]) == 0  # fmt: skip
    html = (out / "ny" / "P-0030-progress.html").read_text()
    assert "EDT" in html or "EST" in html
