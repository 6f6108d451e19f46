"""A block's cues go to the publisher before the rest of the block's work (issue 12, item 3):
an output that is slow with the block, wherever it stands in the list, never delays a cue."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_settings
from devices.registry import open_device
from feedback.outputs.base import BlockDone, CuesDue, Item, Output, Policy, idle
from feedback.outputs.bodies import cue_body
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.mqtt_session import MqttSessionOutput
from feedback.outputs.topics import Topics
from feedback.session import Session

SLOW_S = 0.1  # what the slow output takes with each block that has cues


class RecordingPublisher(MqttPublisher):
    """Never connected: notes when each cue message is handed over, in a shared journal."""

    def __init__(self, journal: list[tuple[str, int, float]]) -> None:
        super().__init__("mqtt://127.0.0.1:9", Topics("c", "s"), client_id="st")
        self.journal = journal

    def publish(self, topic: str, message: dict[str, Any], *, retain: bool = False) -> None:
        super().publish(topic, message, retain=retain)
        if message["type"] == "cue":
            self.journal.append(("cue", message["index"], time.time() - message["t_sample"]))


@dataclass
class SlowWithBlocks:
    """An output that takes SLOW_S with every block that has cues (a disk, a GC pause)."""

    journal: list[tuple[str, int, float]]  # ("block", first index, end index)
    name: str = "slow"
    policy: Policy = Policy.LOSSLESS
    restartable: bool = False
    blocks: list[int] = field(default_factory=list)

    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone) and item.tick.cues:
            block = item.tick.processed.block
            self.journal.append(("block", block.first_index, block.end_index))
            time.sleep(SLOW_S)

    async def run(self) -> None:
        await idle()

    async def drained(self, timeout_s: float) -> bool:
        return True


async def cue_journal(tmp_path: Path) -> list[tuple[str, int, float]]:
    """A session whose slow output comes first in the list, before the MQTT output."""
    s = load_settings(environ={})
    journal: list[tuple[str, int, float]] = []
    publisher = RecordingPublisher(journal)
    mqtt = MqttSessionOutput(publisher, publisher.topics, s.mqtt.live_hz)
    outputs: list[Output] = [SlowWithBlocks(journal), mqtt]
    async with open_device("sim?speed=max", s) as device:
        session = Session(s, device, outputs, duration_s=12.0)
        await asyncio.wait_for(session.run(asyncio.Event()), 60)
    return journal


def assert_cues_lead(journal: list[tuple[str, int, float]]) -> None:
    cues = [(at, lag) for what, at, lag in journal if what == "cue"]
    assert len(cues) >= 3, "the session should have given a few cues"
    # Each block's cues are handed over before the slow output sees that block...
    for i, (what, first, end) in enumerate(journal):
        if what == "block":
            before = [a for w, a, _ in journal[:i] if w == "cue" and first <= a < end]
            assert before, f"the cues of samples {first}..{end} waited for the block's outputs"
    # ...so none waits for it (the pipeline alone is a few ms, even on a busy machine).
    assert max(lag for _, lag in cues) < SLOW_S / 2


async def test_a_slow_output_never_delays_a_cue(tmp_path: Path) -> None:
    assert_cues_lead(await cue_journal(tmp_path))


async def test_cues_sent_with_their_block_are_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: an MQTT output that sends the cues from the block's Tick (as before the
    split) sends them after the slow output, and the check above fails."""
    offer = MqttSessionOutput.offer

    def with_the_block(self: MqttSessionOutput, item: Item) -> None:
        if isinstance(item, BlockDone):
            for cue in item.tick.cues:
                self._message(self.topics.cue, "cue", cue_body(cue, item.tick))
        offer(self, item)

    monkeypatch.setattr(MqttSessionOutput, "_cues", lambda self, due: None)
    monkeypatch.setattr(MqttSessionOutput, "offer", with_the_block)
    with pytest.raises(AssertionError, match="waited for the block's outputs"):
        assert_cues_lead(await cue_journal(tmp_path))


@dataclass
class Items:
    name: str = "items"
    policy: Policy = Policy.LOSSLESS
    restartable: bool = False
    items: list[Item] = field(default_factory=list)

    def offer(self, item: Item) -> None:
        self.items.append(item)

    async def run(self) -> None:
        await idle()

    async def drained(self, timeout_s: float) -> bool:
        return True


def assert_cues_match_their_tick(items: list[Item]) -> int:
    """Each CuesDue comes before its block's BlockDone (the next one) and shows what the Tick
    shows."""
    checked = 0
    for i, due in enumerate(items):
        if isinstance(due, CuesDue):
            done = next(b for b in items[i + 1 :] if isinstance(b, BlockDone))
            tick = done.tick
            assert due.cues == tick.cues and due.exercise is tick.exercise
            assert (due.band, due.reps_total) == (tick.band, tick.reps_total), "not the Tick's"
            checked += 1
    assert checked == sum(isinstance(i, BlockDone) and bool(i.tick.cues) for i in items)
    return checked


async def test_the_early_cues_are_the_ticks_cues() -> None:
    s = load_settings(environ={})
    seen = Items()
    async with open_device("sim?speed=max", s) as device:
        session = Session(s, device, [seen], duration_s=12.0)
        await asyncio.wait_for(session.run(asyncio.Event()), 60)
    assert assert_cues_match_their_tick(seen.items) >= 3
    # Negative control: a band read before the block's progression step is caught.
    i = next(i for i, item in enumerate(seen.items) if isinstance(item, CuesDue))
    due = seen.items[i]
    assert isinstance(due, CuesDue)
    seen.items[i] = replace(due, band=(due.band[0] + 1.0, due.band[1]))
    with pytest.raises(AssertionError, match="not the Tick's"):
        assert_cues_match_their_tick(seen.items)
