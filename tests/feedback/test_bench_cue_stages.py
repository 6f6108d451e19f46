"""bench/cue_stages.py counts a garbage collection as the session's only when it comes inside
`Session.run`. The station's start-up runs blocks through a throwaway pipeline to load numba's
kernels (`compile_kernels`; on a cold cache a dozen full collections of 100-750 ms), and those
counted as the session's while the session was taken to begin at the first block."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import numpy as np

from bench.cue_stages import CueStages
from config.loader import load_settings
from devices.base import SampleBlock
from devices.registry import open_device
from feedback.outputs.session_log import SessionLogOutput
from feedback.outputs.session_store import SessionStore
from feedback.pipeline import Pipeline
from feedback.session import Session


def full_collections_in(report: dict[str, Any], span: str) -> int:
    return int(report.get(f"gc pauses, generation 2, {span}", {"n": 0})["n"])


async def test_a_collection_in_the_kernels_warm_up_is_not_the_sessions(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    sim = settings.simulator
    channels = tuple(sim.channels)
    inside: list[bool] = []  # per full collection: during Session.run?
    running = False

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            inside.append(running)

    stages = CueStages()
    stages.install()
    gc.callbacks.append(seen)
    store = SessionStore(tmp_path / "s.sqlite3")
    try:
        # Start-up as the station has it: a warm-up block, a full collection meanwhile.
        warm = Pipeline(settings, sim.rate_hz, channels)
        warm.process(SampleBlock(0, 0.0, sim.rate_hz, channels, np.zeros((len(channels), 20))))
        gc.collect()
        async with open_device("sim?speed=max", settings) as device:
            session = Session(settings, device, [SessionLogOutput(store)], duration_s=2.0)
            running = True
            await session.run(asyncio.Event())
            running = False
    finally:
        gc.callbacks.remove(seen)
        stages.remove()
        store.close()
    report = stages.report()
    assert inside.count(False) >= 1  # the warm-up's
    assert full_collections_in(report, "in the session") == inside.count(True)
