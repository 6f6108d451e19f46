"""A free-practice replay without a calibration (reps not counted, no band, a `calibration
needed` cue, counted contractions) speaks the v1 contract: the clinic logger, which validates
every message against the JSON Schemas, quarantines none and logs the session's end."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from config import load_settings
from feedback.clinic.db import connect
from feedback.outputs.broker_access import BrokerAccess
from tests.clinic.conftest import ClinicBroker, run_station, running_logger

SEATED = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "4Nsen.txt.gz"


async def test_a_free_uncalibrated_replay_is_accepted_by_the_clinic(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    station = "st-" + secrets.token_hex(3)
    settings = load_settings(
        environ={},
        overrides={"session.station": station, "calibration.profile_dir": str(tmp_path)},
        protocol="free",
    )
    db_url = str(tmp_path / "clinic.db")
    async with running_logger(BrokerAccess.from_url(clinic_broker.url), db_url):
        report = await run_station(
            settings, clinic_broker.url, tmp_path, f"replay:{SEATED}?speed=max"
        )
        await asyncio.sleep(1.0)  # the last messages reach the logger
    assert report["reps"] is None and report["contractions"] == 4
    assert report["calibration"]["calibrated"] is False
    db = connect(db_url)
    try:
        assert db.query("SELECT reason FROM quarantine") == []
        (summary,) = db.query("SELECT summary_json FROM sessions")[0]
        wire = json.loads(summary)
        assert wire["reps"] == 0 and wire["reps_counted"] is False  # v1 needs an integer
        assert wire["contractions"] == 4
        events = [t for (t,) in db.query("SELECT type FROM events")]
        assert events.count("contraction") == 4
    finally:
        db.close()
