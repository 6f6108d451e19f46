"""A session makes (almost) no cyclic garbage per block: the cue's path through the pipeline, the
outputs and a publisher connected to a real Mosquitto (the fast lane writing paho's socket) is
freed by reference counts, so the collector's young generations find nothing to do and a full
collection has no growth to be triggered by (feedback/collector.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_settings
from devices.registry import open_device
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.session_store import SessionStore
from feedback.outputs.topics import Topics
from feedback.pipeline import Pipeline, compile_kernels
from feedback.station import compose
from tests.conftest import MosquittoProcess

pytestmark = pytest.mark.broker

# What the collector may find after a whole session: its one-off cycles (today 9 objects: the
# recursive closure of `pairwise_plan`, once per pipeline). A cycle made per block is 3,000 or
# more; one per session message (about 30: status, start, cues, reps, end) 60 or more.
MAX_CYCLIC = 50
SESSION_S = 30.0  # simulated seconds (speed=max): 3,000 blocks, 10 reps and their cues


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.asynccontextmanager
async def connected(publisher: MqttPublisher) -> AsyncIterator[None]:
    task = asyncio.create_task(publisher.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while publisher._client is None:  # the fast lane is up: `publish` writes the socket
            assert loop.time() < deadline, "never connected"
            await asyncio.sleep(0.01)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def session_garbage(url: str, tmp_path: Path) -> tuple[int, int, int]:
    """(cyclic objects the collector finds after a session, its blocks, messages sent)."""
    settings = load_settings(environ={}, overrides={"session.station": "gc"})
    s = settings.session
    publisher = MqttPublisher(url, Topics(s.clinic, s.station), client_id="st-gc")
    store = SessionStore(tmp_path / "s.sqlite3")
    compile_kernels(settings)  # as a station does at start-up: loading them makes garbage
    blocks = 0
    cue_step = Pipeline.cue_step

    def counted(pipeline: Pipeline, block: Any) -> Any:
        nonlocal blocks
        blocks += 1
        return cue_step(pipeline, block)

    try:
        async with connected(publisher), open_device("sim?speed=max", settings) as device:
            session = compose(settings, device, publisher, store, duration_s=SESSION_S)
            Pipeline.cue_step = counted  # type: ignore[method-assign]
            try:
                with collector_off():
                    await session.run(asyncio.Event())
                    found = gc.collect()
            finally:
                Pipeline.cue_step = cue_step  # type: ignore[method-assign]
            await publisher.flush(5)
    finally:
        store.close()
    return found, blocks, publisher.stats.sent


async def test_a_session_makes_no_cyclic_garbage_per_block(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    found, blocks, sent = await session_garbage(mosquitto.url, tmp_path)
    assert blocks >= 3_000 and sent > 20  # the path was walked, cues and all, on the wire
    assert found < MAX_CYCLIC


async def test_the_check_catches_a_cycle_per_message(
    mosquitto: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: each session message leaves a cycle (a callback stored on the dict it
    closes over, as a per-message completion handler kept on its message would)."""
    publish: Callable[..., None] = MqttPublisher.publish

    def cyclic(self: MqttPublisher, topic: str, message: dict[str, Any], **kw: Any) -> None:
        box: dict[str, Any] = {}
        box["again"] = lambda: box  # box -> function -> cell -> box
        publish(self, topic, message, **kw)

    monkeypatch.setattr(MqttPublisher, "publish", cyclic)
    found, _, _ = await session_garbage(mosquitto.url, tmp_path)
    assert found >= MAX_CYCLIC
