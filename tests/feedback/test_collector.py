"""In a station's session a full garbage collection walks only what the session made, not the
~175,000 objects start-up left (feedback/collector.py); after the session, everything again."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from config.loader import load_settings
from feedback import app
from feedback.pipeline import Pipeline
from feedback.session import Session
from tests.conftest import MosquittoProcess

pytestmark = pytest.mark.broker

MAX_WALKED = 20_000  # a session's own objects: about 600 at its first block (184,000 unfrozen)


def walked_in_a_session(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[objects a full collection would walk at a block of the session, all tracked objects
    then, objects it would walk after the session]."""
    seen: list[int] = []
    cue_step, run = Pipeline.cue_step, Session.run
    in_session = False

    def watched(pipeline: Pipeline, block: Any) -> Any:
        if in_session and not seen:  # the kernels' warm-up, before the session, runs blocks too
            seen[:] = [len(gc.get_objects()), len(gc.get_objects()) + gc.get_freeze_count()]
        return cue_step(pipeline, block)

    async def session_run(session: Session, stop: asyncio.Event) -> Any:
        nonlocal in_session
        in_session = True
        try:
            return await run(session, stop)
        finally:
            in_session = False

    monkeypatch.setattr(Pipeline, "cue_step", watched)
    monkeypatch.setattr(Session, "run", session_run)
    options = app.RunOptions(
        device="sim?speed=max",
        duration_s=1.0,
        db=str(tmp_path / "s.sqlite3"),
        broker=url,
        report=None,
        live_view=False,
    )
    with open(os.devnull, "w") as devnull:
        asyncio.run(app.run(load_settings(environ={}), options, console=Console(file=devnull)))
    assert seen, "no block in the session"
    return [*seen, len(gc.get_objects())]


def test_a_full_collection_in_a_session_walks_only_the_sessions_objects(
    mosquitto: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    during, tracked, after = walked_in_a_session(mosquitto.url, tmp_path, monkeypatch)
    assert tracked > 100_000  # start-up's: modules, numba's and scipy's tables, settings
    assert during < MAX_WALKED
    assert after > 100_000  # unfrozen when the session ends
    assert gc.get_freeze_count() == 0


def test_the_check_catches_a_station_without_the_freeze(
    mosquitto: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: the station as it was."""
    monkeypatch.setattr(app, "start_up_frozen", contextlib.nullcontext)
    during, _, _ = walked_in_a_session(mosquitto.url, tmp_path, monkeypatch)
    assert during >= MAX_WALKED
