"""A whole simulated session through a real broker to a subscriber, and into the SQLite log."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console

from config.loader import load_settings
from feedback import app
from feedback.outputs.mqtt_publisher import parse_broker_url
from feedback.outputs.stream import StreamPacket, decode

SESSION_S = 10.0


async def run_with_subscriber(
    broker_url: str, tmp_path: Path, device: str
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    station = "test-" + secrets.token_hex(4)  # a unique topic tree per test
    # No clinic logger here: no receipts to wait for.
    settings = load_settings(
        environ={}, overrides={"session.station": station, "mqtt.receipts": False}
    )
    host, port = parse_broker_url(broker_url)
    received: list[tuple[str, dict[str, Any]]] = []
    streamed: list[StreamPacket] = []
    ended = asyncio.Event()

    async with aiomqtt.Client(host, port, identifier=f"sub-{station}") as sub:
        await sub.subscribe(f"vmf/v1/{settings.session.clinic}/{station}/#", qos=1)

        async def collect() -> None:
            async for msg in sub.messages:
                if str(msg.topic).endswith("/stream"):  # binary (feedback.outputs.stream)
                    streamed.append(decode(msg.payload))  # type: ignore[arg-type,unused-ignore]
                    continue
                body = json.loads(msg.payload)  # type: ignore[arg-type,unused-ignore]
                received.append((str(msg.topic), body))
                if body["type"] == "session_end":
                    ended.set()

        collector = asyncio.create_task(collect())
        options = app.RunOptions(
            device=device,
            duration_s=SESSION_S,
            db=str(tmp_path / "s.db"),
            broker=broker_url,
            report=tmp_path / "r.json",
            live_view=False,
        )
        with open(os.devnull, "w") as devnull:
            report = await app.run(settings, options, console=Console(file=devnull))
        await asyncio.wait_for(ended.wait(), 10)
        collector.cancel()
    assert streamed and all(p.session == report["session_id"] for p in streamed)
    return report, received


def check_session(
    report: dict[str, Any], received: list[tuple[str, dict[str, Any]]], tmp_path: Path
) -> None:
    assert report["samples"] == 20_000
    assert report["reps"] >= 1
    assert report["gaps"] == 0
    types = [body["type"] for _, body in received]
    assert types.count("session_start") == 1 and types[-1] in ("session_end", "status")
    cues = [body for _, body in received if body["type"] == "cue"]
    assert {"kind": "phase", "value": "work"}.items() <= cues[0].items()
    assert any(c["kind"] == "rep" and c["value"] == "1" for c in cues)
    assert any(c["kind"] == "zone" and c["value"] == "in_band" for c in cues)
    # Lossless lane: every session message arrives once, in order (msg_id increases).
    lossless = [b["msg_id"] for t, b in received if not t.endswith("/live")]
    assert lossless == sorted(lossless) and len(set(lossless)) == len(lossless)
    assert all(b["session"] == report["session_id"] for _, b in received)
    assert any(t.endswith("/live") for t, _ in received)
    # No patient name anywhere: only the pseudonymous id configured.
    start = next(b for _, b in received if b["type"] == "session_start")
    assert start["patient"] == "P-0001"
    # Where the electrodes sat (issue 16): the SENIAM default montage for the channels recorded.
    vm = start["montage"]["electrodes"]["VM"]
    assert vm["muscle"] == "vastus medialis" and vm["inter_electrode_mm"] == 20.0

    db = sqlite3.connect(tmp_path / "s.db")
    (ended_at, summary) = db.execute(
        "SELECT ended_at, summary_json FROM sessions WHERE id = ?", (report["session_id"],)
    ).fetchone()
    assert ended_at is not None and json.loads(summary)["reps"] == report["reps"]
    (reps,) = db.execute("SELECT count(*) FROM reps").fetchone()
    assert reps == report["reps"]
    (logged_cues,) = db.execute("SELECT count(*) FROM events WHERE kind = 'cue'").fetchone()
    assert logged_cues == len(cues)
    assert json.loads((tmp_path / "r.json").read_text())["session_id"] == report["session_id"]


async def test_session_through_embedded_broker(embedded_broker: Any, tmp_path: Path) -> None:
    report, received = await run_with_subscriber(embedded_broker.url, tmp_path, "sim?speed=max")
    check_session(report, received, tmp_path)


async def test_session_through_mosquitto(mosquitto: Any, tmp_path: Path) -> None:
    report, received = await run_with_subscriber(mosquitto.url, tmp_path, "sim?speed=max")
    check_session(report, received, tmp_path)


async def test_session_start_on_the_wire_has_no_path_account_or_name(
    mosquitto: Any, tmp_path: Path
) -> None:
    """A clinic subscriber sees what it needs to interpret the session, and nothing personal."""
    home = tmp_path / "home" / "janesmith"  # a user's name in every local path
    home.mkdir(parents=True)
    station = "test-" + secrets.token_hex(4)
    settings = load_settings(
        environ={"VMF_MQTT__PASSWORD": "hunter2secret"},
        overrides={
            "session.station": station,
            "mqtt.username": "station-user-jsmith",
            "mqtt.outbox": str(home / "outbox.sqlite3"),
            "mqtt.therapists": ["therapist-1"],
            "mqtt.receipts": False,  # no clinic logger here
            "calibration.profile_dir": str(home / "profiles"),
        },
    )
    host, port = parse_broker_url(mosquitto.url)
    async with aiomqtt.Client(host, port, identifier=f"sub-{station}") as sub:
        await sub.subscribe(f"vmf/v1/{settings.session.clinic}/{station}/#", qos=1)
        options = app.RunOptions(
            device="sim?speed=max",
            duration_s=1.0,
            db=str(home / "s.db"),
            broker=mosquitto.url,
            report=None,
            live_view=False,
        )
        with open(os.devnull, "w") as devnull:
            report = await app.run(settings, options, console=Console(file=devnull))
        assert report["mqtt_flushed"], report
        async with asyncio.timeout(10):
            async for msg in sub.messages:
                if not str(msg.topic).endswith("/session"):
                    continue  # the others include the binary live stream
                text = msg.payload.decode()  # type: ignore[union-attr]
                if '"session_start"' in text:
                    break
    start = json.loads(text)
    assert start["type"] == "session_start" and start["patient"] == "P-0001"
    for secret in ("janesmith", "jsmith", "hunter2", "/", "\\\\", "therapist-1", "outbox", "tls"):
        assert secret not in text, (secret, text)
    assert {"processing", "calibration", "target", "protocol", "stimulation"} <= set(
        start["settings"]
    )
    assert start["device"]["kind"] and start["device"]["rate_hz"] == 2000
    # The station's own log keeps the full snapshot (paths included), never the password.
    db = sqlite3.connect(home / "s.db")
    (local,) = db.execute("SELECT settings_json FROM sessions").fetchone()
    assert "outbox.sqlite3" in local and "station-user-jsmith" in local
    assert "hunter2" not in local and "password" not in json.loads(local)["mqtt"]
