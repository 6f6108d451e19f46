"""The embedded broker's end is bounded: amqtt 0.12 can wait forever in `shutdown` on a WebSocket
client still connected, and a station (or a test) must not hang on the broker it brought."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from feedback import broker as broker_module
from feedback.broker import EmbeddedBroker


async def test_a_shutdown_that_never_ends_is_left_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from amqtt.broker import Broker

    real = Broker.shutdown

    async def hangs(self: Broker) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(broker_module, "SHUTDOWN_TIMEOUT_S", 0.3)
    monkeypatch.setattr(Broker, "shutdown", hangs)
    b = EmbeddedBroker()
    await b.__aenter__()
    start = time.monotonic()
    await asyncio.wait_for(b.__aexit__(None, None, None), 5)
    assert time.monotonic() - start < 2
    assert "did not finish" in caplog.text
    assert b._broker is not None
    await real(b._broker)  # free the ports for the tests after this one


async def test_a_normal_shutdown_says_nothing(caplog: Any) -> None:
    async with EmbeddedBroker():
        pass
    assert "did not finish" not in caplog.text
