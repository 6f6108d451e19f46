"""The clinic logger's queue is bounded: QoS 0 live snapshots beyond MAX_QUEUED are dropped and
counted while the database lags; QoS 1 messages (held to the receive maximum by the broker) are
all kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from feedback.clinic import logger as logger_module
from feedback.clinic.logger import MAX_QUEUED, RECEIVE_MAXIMUM, ClinicLogger
from feedback.clinic.store import ClinicStore
from feedback.outputs.broker_access import BrokerAccess


class FloodingClient:
    """Speaks the part of aiomqtt.Client that the reader uses: 20k live snapshots (QoS 0)
    interleaved with session messages (QoS 1), faster than any database."""

    def __init__(self, n: int = 20_000, every_qos1: int = 10) -> None:
        self.n, self.every_qos1 = n, every_qos1

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        async def gen() -> AsyncIterator[aiomqtt.Message]:
            for i in range(self.n):
                qos = 1 if i % self.every_qos1 == 0 else 0
                leaf = "event" if qos else "live"
                yield aiomqtt.Message(f"vmf/v1/c1/s1/{leaf}", b"{}", qos, False, i + 1, None)

        return gen()


def reader(tmp_path: Path) -> ClinicLogger:
    access = BrokerAccess.from_url("mqtt://127.0.0.1:1")
    return ClinicLogger(access, ClinicStore(str(tmp_path / "clinic.sqlite3")))


async def test_queue_stays_bounded_and_keeps_every_qos1(tmp_path: Path) -> None:
    log = reader(tmp_path)
    queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    await log._read(FloodingClient(), queue)  # type: ignore[arg-type]  # nobody drains it
    kept = [queue.get_nowait() for _ in range(queue.qsize())]
    assert len(kept) <= MAX_QUEUED + 20_000 // 10  # the bound, plus QoS 1 ones
    assert log.stats.queue_peak == len(kept)
    assert sum(m.qos == 1 for m in kept) == 2_000  # every QoS 1 message kept
    assert log.stats.dropped_qos0 == 20_000 - len(kept) > 0
    assert MAX_QUEUED >= RECEIVE_MAXIMUM


async def test_negative_control_without_the_bound_the_queue_holds_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logger_module, "MAX_QUEUED", 10**9)
    log = reader(tmp_path)
    queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    await log._read(FloodingClient(), queue)  # type: ignore[arg-type]
    assert queue.qsize() == 20_000 > MAX_QUEUED + 2_000  # what the test above rules out
