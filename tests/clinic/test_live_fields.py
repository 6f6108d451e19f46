"""Live LSI, onset state and the VM–VL onset difference reach a subscriber through Mosquitto,
and the clinic logger (which validates every message against the JSON Schemas) accepts them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

import aiomqtt

from feedback.clinic.db import connect
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.topics import Topics
from tests.clinic.conftest import ClinicBroker, run_station, running_logger, station_settings

BILATERAL = ["VM_R", "VL_R", "VM_L", "VL_L"]


async def collect(port: int, topic: str, out: list[dict[str, Any]], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=0)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            out.append(json.loads(message.payload))


async def test_live_carries_lsi_onsets_and_onset_difference(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    station = "st-" + secrets.token_hex(3)
    settings = station_settings(
        station,
        **{
            "simulator.channels": BILATERAL,
            "mqtt.live_hz": 100.0,
            "protocol.reps": 4,
            # The onset rule learns the rest baseline first: within the simulator's first rest.
            "onset.baseline_s": 0.5,
        },
    )
    topics = Topics(settings.session.clinic, station)
    db_url = str(tmp_path / "clinic.db")
    live: list[dict[str, Any]] = []
    ready = asyncio.Event()
    async with running_logger(BrokerAccess.from_url(clinic_broker.url), db_url):
        sub = asyncio.create_task(collect(clinic_broker.port, topics.live, live, ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            # A bilateral device: the trained side's VM is VM_R (side = right).
            report = await run_station(settings, clinic_broker.url, tmp_path, "sim?speed=max")
            await asyncio.sleep(0.5)  # the last live messages reach the logger and subscriber
        finally:
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
    assert len(live) > 20, len(live)
    assert all(set(m["onset"]) == set(BILATERAL) for m in live)
    # Both sides contract alike in the simulator: the LSI sits near 100 while they work.
    lsis = [m["lsi"] for m in live if m["lsi"] is not None]
    assert lsis and all(60 < x < 160 for x in lsis), lsis[:10]
    assert any(m["lsi"] is None for m in live)  # at rest there is no ratio
    on = [m for m in live if m["onset"]["VM_R"]]
    assert on and any(not m["onset"]["VM_R"] for m in live)
    # VL follows VM by 30 ms in the simulator; the figure appears after the first contraction.
    diffs = [m["vm_vl_onset_ms"] for m in live if m["vm_vl_onset_ms"] is not None]
    assert diffs and all(0 < d < 80 for d in diffs), diffs[:10]
    assert live[0]["vm_vl_onset_ms"] is None
    db = connect(db_url)
    try:
        assert db.query("SELECT reason FROM quarantine") == []
        rows = db.query(
            "SELECT sum(count) FROM live_seconds WHERE session_id = ?", (report["session_id"],)
        )
        assert rows[0][0] > 0
    finally:
        db.close()
