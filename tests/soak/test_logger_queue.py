"""The clinic logger's queue is bounded: QoS 0 live snapshots beyond MAX_QUEUED are dropped and
counted while the database lags; QoS 1 messages (held to the receive maximum by the broker) are
all kept."""

from __future__ import annotations

from feedback.clinic.intake import PahoIntake
from feedback.clinic.logger import MAX_QUEUED, RECEIVE_MAXIMUM
from feedback.outputs.broker_access import BrokerAccess


def flood(intake: PahoIntake, n: int = 20_000, every_qos1: int = 10) -> None:
    """20k live snapshots (QoS 0) interleaved with session messages (QoS 1), faster than any
    database: handed to the intake as paho's network thread would."""
    for i in range(n):
        qos = 1 if i % every_qos1 == 0 else 0
        leaf = "event" if qos else "live"
        intake._on_publish_packet(f"vmf/v1/c1/s1/{leaf}".encode(), b"{}", qos, i + 1)


def reader(max_queued: int = MAX_QUEUED) -> PahoIntake:
    access = BrokerAccess.from_url("mqtt://127.0.0.1:1")
    return PahoIntake(access, "t", ["vmf/#"], max_queued=max_queued)  # never started


def test_queue_stays_bounded_and_keeps_every_qos1() -> None:
    intake = reader()
    flood(intake)  # nobody drains it
    kept = intake.take(10**6, 0)
    assert len(kept) <= MAX_QUEUED + 20_000 // 10  # the bound, plus QoS 1 ones
    assert intake.stats.queue_peak == len(kept)
    assert sum(m.qos == 1 for m in kept) == 2_000  # every QoS 1 message kept
    assert intake.stats.dropped_qos0 == 20_000 - len(kept) > 0
    assert MAX_QUEUED >= RECEIVE_MAXIMUM


def test_negative_control_without_the_bound_the_queue_holds_everything() -> None:
    intake = reader(max_queued=10**9)
    flood(intake)
    assert intake.queued() == 20_000 > MAX_QUEUED + 2_000  # what the test above rules out
