"""Failures a clinic will see: the broker gone for 30 s mid-session, the logger killed -9."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from feedback.clinic.db import connect
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import SqliteOutbox
from feedback.outputs.topics import MessageNumberer, Topics, encode
from tests.clinic.conftest import (
    ClinicBroker,
    run_station,
    running_logger,
    sqlite_rows,
    station_settings,
    wait_until,
)
from tests.clinic.test_logger import check_logged, session_ended

ROOT = Path(__file__).resolve().parents[2]


def count(db_url: str, sql: str) -> int:
    if not Path(db_url).exists():
        return 0
    db = connect(db_url)
    try:
        return int(db.query(sql)[0][0])
    except Exception:
        return 0  # the logger has not created the tables yet
    finally:
        db.close()


def start_logger(broker_url: str, db_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "feedback.clinic.logger", "--broker", broker_url, "--db", db_url,
         "--group", "g", "--instance", "kill9"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


async def probe(broker: ClinicBroker, db_url: str, tag: str) -> None:
    """Publish markers until the logger has stored one: it is subscribed and working. (A marker
    sent before its subscription exists reaches nobody, hence the repeats.)"""
    numberer = MessageNumberer(f"S-probe-{tag}")
    sql = f"SELECT count(*) FROM events WHERE session_id = 'S-probe-{tag}'"
    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
        for _ in range(30):
            body = numberer.envelope("gap", {"from_index": 0, "missing": 1})
            await pub.publish(Topics("clinic-demo", "probe").event, encode(body), qos=1)
            try:
                await wait_until(lambda: count(db_url, sql) >= 1, 0.5, "the probe")
                return
            except AssertionError:
                continue
    raise AssertionError("the logger never stored a probe")


async def test_logger_killed_9_mid_session_loses_nothing(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    station = "st-" + secrets.token_hex(3)
    logger = start_logger(clinic_broker.url, db_url)
    try:
        await probe(clinic_broker, db_url, "before")
        settings = station_settings(station, **{"session.pain_before": 4})
        session = asyncio.create_task(run_station(settings, clinic_broker.url, tmp_path))
        await wait_until(
            lambda: count(db_url, "SELECT count(*) FROM cues") >= 3, 15, "the first cues"
        )
        logger.send_signal(signal.SIGKILL)
        logger.wait(5)
        await asyncio.sleep(3)  # the station keeps publishing; the broker queues for the logger
        logger = start_logger(clinic_broker.url, db_url)
        report = await session
        await wait_until(lambda: session_ended(db_url, report["session_id"]), 15, "session_end")
        await probe(clinic_broker, db_url, "after")  # all before it is stored
    finally:
        logger.terminate()
        logger.wait(5)
    check_logged(db_url, report, tmp_path / f"{station}.db", redelivered_ok=True)


@pytest.mark.slow
async def test_broker_down_30_s_mid_session_every_message_once_in_order(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    db_url = str(tmp_path / "clinic.db")
    station = "st-" + secrets.token_hex(3)
    # 13 periods of 3 s: a 39.5 s real-time session, of which the broker misses 30 s; the
    # backlog has the session's last 6.5 s and the 5 s end-of-session flush to reach the logger.
    settings = station_settings(station, **{"session.pain_before": 4, "protocol.reps": 13})
    outbox = tmp_path / f"{station}-outbox.sqlite3"
    access = BrokerAccess.from_url(clinic_broker.url)
    async with running_logger(access, db_url):
        session = asyncio.create_task(run_station(settings, clinic_broker.url, tmp_path))
        await asyncio.sleep(3)
        clinic_broker.stop()
        await asyncio.sleep(30)
        waiting = sqlite_rows(outbox, "SELECT count(*) FROM outbox")[0][0]
        assert waiting > 10  # the backlog the terminal view shows, on disk
        clinic_broker.start()
        report = await session
        assert report["mqtt_flushed"] and report["mqtt_backlog_at_end"] == 0
        await wait_until(lambda: session_ended(db_url, report["session_id"]), 20, "session_end")
        await asyncio.sleep(0.5)
    check_logged(db_url, report, tmp_path / f"{station}.db", periods=13, redelivered_ok=True)


async def test_station_holds_what_nobody_subscribes_to_after_a_broker_restart(
    clinic_broker: ClinicBroker, tmp_path: Path
) -> None:
    """Mosquitto 2.0 restores a logger's persistent session after a restart but not its shared
    subscription; until the logger subscribes again the broker answers "no matching subscribers",
    and the station must keep those messages rather than count them as delivered."""
    db_url = str(tmp_path / "clinic.db")
    access = BrokerAccess.from_url(clinic_broker.url)
    async with running_logger(access, db_url):
        pass  # subscribed once; its session outlives it
    clinic_broker.stop()
    clinic_broker.start()
    topics = Topics("clinic-demo", "st-hold")
    numberer = MessageNumberer("S-hold")
    outbox = SqliteOutbox(tmp_path / "hold-outbox.sqlite3")
    publisher = MqttPublisher(
        clinic_broker.url, topics, client_id="st-hold", outbox=outbox, mqtt5=True,
        hold_without_subscriber=True,
    )  # fmt: skip
    runner = asyncio.create_task(publisher.run())
    for i in range(5):
        publisher.publish(topics.event, numberer.envelope("gap", {"from_index": i, "missing": 1}))
    await wait_until(lambda: publisher.stats.held_no_subscriber >= 2, 10, "held publishes")
    assert publisher.backlog == 5 and publisher.stats.published == 0
    sql = "SELECT count(*) FROM events WHERE session_id = 'S-hold'"
    async with running_logger(access, db_url):
        await wait_until(lambda: count(db_url, sql) == 5, 10, "the held messages")
    runner.cancel()
    db = connect(db_url)
    assert db.query("SELECT msg_id FROM messages ORDER BY seq") == [(i,) for i in range(1, 6)]
    assert publisher.backlog == 0
