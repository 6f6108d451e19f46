"""During a station's session start-up's objects are frozen out of garbage collection (a full
collection walking them stopped the event loop for 57-75 ms, a cue waiting); after it, not."""

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


def frozen_in_a_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(objects frozen while the pipeline works on a block, frozen after the session)."""
    seen: list[int] = []
    cue_step = Pipeline.cue_step

    def watched(pipeline: Pipeline, block: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return cue_step(pipeline, block)

    monkeypatch.setattr(Pipeline, "cue_step", watched)
    options = app.RunOptions(
        device="sim?speed=max",
        duration_s=0.5,
        db=str(tmp_path / "s.sqlite3"),
        broker="none",
        report=None,
        live_view=False,
    )
    with open(os.devnull, "w") as devnull:
        asyncio.run(app.run(load_settings(environ={}), options, console=Console(file=devnull)))
    assert seen
    return seen[-1], gc.get_freeze_count()  # (the first may be the kernels' warm-up)


def test_a_session_runs_with_start_up_frozen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    during, after = frozen_in_a_session(tmp_path, monkeypatch)
    assert during > 10_000  # start-up's objects: modules, tables, settings
    assert after == 0


def test_the_check_catches_a_station_without_the_freeze(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: the station as it was."""
    monkeypatch.setattr(app, "startup_frozen", contextlib.nullcontext)
    assert frozen_in_a_session(tmp_path, monkeypatch) == (0, 0)
