"""Reports from a clinic database filled the real way: sessions through Mosquitto and the logger."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest

from feedback.clinic import report
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
    assert html.count("<svg") == 6 and "polyline" in html and "P-0001" in html
    assert "6 / not recorded" in html and "None" not in html  # no pain score after session 1
    assert "Clinic record" in html and "complete: messages 1–" in html
    rows = list(csv.DictReader((out / f"{first}-reps.csv").open()))
    assert [r["period"] for r in rows] == ["1", "2", "3"]
    assert all(30 < float(r["peak_pct_mvc"]) < 70 for r in rows if r["achieved"] == "1")

    assert report.main(["--db", db_url, "--out", str(out), "patient", "P-0001"]) == 0
    progress = list(csv.DictReader((out / "P-0001-progress.csv").open()))
    assert [p["session_id"] for p in progress] == [first, second]
    assert [(p["pain_before"], p["pain_after"]) for p in progress] == [("6", ""), ("3", "2")]
    assert float(progress[1]["peak_pct_mvc"]) > float(progress[0]["peak_pct_mvc"])  # 50 vs 45 %
    assert all(float(p["adherence_pct"]) > 60 for p in progress)
    assert (out / "P-0001-progress.html").read_text().count("<svg") == 7
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
    assert f"INCOMPLETE: {len(gone)} of {last} messages missing" in html
    assert report._spans(gone) in html and "msg_id 3–5, 9" in html
    assert report.main(["--db", db_url, "--out", str(out), "patient", "P-0001"]) == 0
    progress = list(csv.DictReader((out / "P-0001-progress.csv").open()))
    assert [p["record"] for p in progress] == [
        "complete",
        f"{len(gone)} messages missing; not ended",
    ]
    assert "no session_end yet" in html


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
