"""A free-practice replay without a calibration (reps not counted, no band, a `calibration
needed` cue, counted contractions) speaks the v1 contract: the clinic logger, which validates
every message against the JSON Schemas, quarantines none and logs the session's end."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from config.loader import load_settings
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
        assert wire["reps"] is None  # not 0: no reps were prescribed or counted
        assert wire["contractions"] == 4
        events = [t for (t,) in db.query("SELECT type FROM events")]
        assert events.count("contraction") == 4
        (reps_prescribed,) = db.query("SELECT reps_prescribed FROM sessions")[0]
        assert reps_prescribed is None
        live_reps = {r for (r,) in db.query("SELECT reps FROM live_seconds")}
        assert live_reps <= {None}
        cues = [k for (k,) in db.query("SELECT kind FROM cues")]
        assert "calibration" in cues  # the "calibration needed" prompt reaches the clinic
    finally:
        db.close()


def test_the_contract_says_null_for_reps_not_counted_and_refuses_nonsense() -> None:
    """`reps: null` (free practice) and the `calibration` cue are valid v1 messages; a negative
    count or an unknown cue kind is still refused, so the widening is not an open door."""
    import pytest

    from feedback.clinic.validation import InvalidMessage, check
    from feedback.outputs.topics import MessageNumberer, Topics, encode

    topics, numberer = Topics("clinic-a", "st-1"), MessageNumberer("S1")
    live = {"pct_mvc": {"VM": 3.0}, "phase": "work", "reps": None, "index": 10}
    check(topics.live, encode(numberer.live_envelope(live)))
    cue = {"kind": "calibration", "value": "needed", "index": 10, "t_sample": 1.0}
    check(topics.cue, encode(numberer.envelope("cue", cue)))
    with pytest.raises(InvalidMessage, match="reps"):
        check(topics.live, encode(numberer.live_envelope({**live, "reps": -1})))
    with pytest.raises(InvalidMessage, match="kind"):
        check(topics.cue, encode(numberer.envelope("cue", {**cue, "kind": "selfie"})))
