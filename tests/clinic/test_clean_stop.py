"""A logger's own shutdown is not a lost connection: no warning, no count, no redial (anyone
alerting on either would be woken by every restart). A broker that goes away still is one."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from feedback.clinic.intake import PahoIntake
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.topics import MessageNumberer
from tests.clinic.conftest import running_logger
from tests.clinic.test_command_lane import T, running, station
from tests.conftest import MosquittoProcess


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(10), f"timed out waiting for {what}"


def connected_intake(broker: MosquittoProcess) -> tuple[PahoIntake, threading.Event]:
    ready = threading.Event()
    intake = PahoIntake(
        BrokerAccess.from_url(broker.url), "clean-stop", ["vmf/v1/#"], on_ready=ready.set
    )
    intake.start()
    wait_for(ready, "the subscription")
    return intake, ready


def warnings_from(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == name and r.levelno >= logging.WARNING]  # fmt: skip


def stop_without_saying_so(intake: PahoIntake) -> None:
    """The stop before this fix: paho's disconnect alone, the intake not told it asked for it."""
    intake.client.disconnect()
    intake.client.loop_stop()


@pytest.mark.parametrize("variant", ["correct", "stop_not_marked"])
def test_a_clean_stop_is_not_a_lost_connection(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    caplog.set_level(logging.INFO, logger="feedback.clinic")
    intake, _ = connected_intake(mosquitto)
    lost = threading.Event()
    intake.on_lost = lost.set
    if variant == "correct":
        intake.stop()
    else:
        stop_without_saying_so(intake)
    warned = warnings_from(caplog, "feedback.clinic.intake")
    ok = warned == [] and intake.stats.disconnects == 0 and not lost.is_set()
    assert ok is (variant == "correct"), (warned, intake.stats)
    assert intake.stats.connects == 1


def test_a_broker_that_goes_away_is_still_a_lost_connection(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="feedback.clinic")
    intake, ready = connected_intake(mosquitto)
    lost = threading.Event()
    intake.on_lost = lost.set
    try:
        ready.clear()
        mosquitto.stop()
        wait_for(lost, "the loss to be noticed")
        assert intake.stats.disconnects == 1
        assert any("connection lost" in w for w in warnings_from(caplog, "feedback.clinic.intake"))
        mosquitto.start()
        wait_for(ready, "the redial")  # the redial still runs
        assert intake.stats.connects == 2
    finally:
        intake.stop()
    assert intake.stats.disconnects == 1  # the stop afterwards adds nothing


async def test_the_whole_logger_stops_without_a_warning(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """As `python -m feedback.clinic.logger` stops on SIGTERM (the run cancelled): both of its
    connections, the intake's and the receipts', close without a word above INFO."""
    caplog.set_level(logging.INFO, logger="feedback.clinic")
    access = BrokerAccess.from_url(mosquitto.url)
    async with running_logger(access, str(tmp_path / "clinic.db")) as logger:
        pass
    assert logger.intake is not None and logger.intake.stats.disconnects == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == []


@pytest.mark.parametrize("variant", ["correct", "stop_forgotten"])
async def test_the_stations_end_line_does_not_call_its_own_stop_a_lost_connection(
    mosquitto: MosquittoProcess, caplog: pytest.LogCaptureFixture, variant: str
) -> None:
    """The station asks why messages are undelivered after it has stopped the publisher (its
    end line). With receipts on and no clinic logger, a message stays; the reason is the
    missing receipt, not "connection lost" (the station closed the connection itself)."""
    caplog.set_level(logging.INFO, logger="feedback.outputs")
    publisher, _, _ = station(mosquitto.url, receipts=True)
    async with running(publisher):
        publisher.publish(T.event, MessageNumberer("S1").envelope("gap", {"from_index": 0}))
    if variant == "stop_forgotten":  # as before: the stop left no trace
        publisher._connected_at_stop = False
    reason = publisher.undelivered_reason()
    warned = warnings_from(caplog, "feedback.outputs.mqtt_publisher")
    ok = publisher.backlog == 1 and "lost" not in reason and "logger" in reason
    assert ok is (variant == "correct"), reason
    assert warned == [] and publisher.stats.connects == 1
