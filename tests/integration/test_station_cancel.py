"""A station task that is cancelled (a test's teardown, an embedding program giving up) takes its
outputs' tasks with it. Before, they outlived `app.run`, wrote to a closed session log, were
restarted by the supervisor and kept a broker connection open: a web test's teardown then waited
on them for up to 15 minutes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from config.loader import load_settings
from feedback import app
from feedback.supervision import Supervisor


def station_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("vmf-") and not t.done()]


async def cancel_mid_session(mosquitto: Any, tmp_path: Path) -> list[asyncio.Task[Any]]:
    settings = load_settings(
        environ={}, overrides={"session.station": "st-cancel", "mqtt.receipts": False}
    )
    options = app.RunOptions(
        device="sim",
        duration_s=None,
        db=str(tmp_path / "s.db"),
        broker=mosquitto.url,
        report=None,
        live_view=False,
    )
    with open(os.devnull, "w") as devnull:
        task = asyncio.create_task(app.run(settings, options, console=Console(file=devnull)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(station_tasks()) < 2:  # its outputs are running
            assert loop.time() < deadline, "the station's outputs never started"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.5)  # a restart loop would show here
    return station_tasks()


async def test_a_cancelled_station_leaves_no_tasks_behind(mosquitto: Any, tmp_path: Path) -> None:
    assert await cancel_mid_session(mosquitto, tmp_path) == []


async def test_negative_control_a_station_that_does_not_close_its_supervisor_leaks(
    mosquitto: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async def forget(self: Supervisor) -> None:
        return None

    monkeypatch.setattr(Supervisor, "close", forget)
    left = await cancel_mid_session(mosquitto, tmp_path)
    try:
        assert left, "the check above cannot see leaked tasks"
    finally:
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)
