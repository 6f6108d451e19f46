"""A link loss during a burst, end to end: the whole station (`feedback.app.run`) with the real
serial driver on a pty, Mosquitto and the SQLite log. The emulator goes away right after the
firmware accepted the first burst and a new one comes back on the same path (a symlink, as
`python -m devices.firmware_pty --pty --link PATH` makes).

The stimulation driver must survive the failed sends, never log a burst the firmware did not
get, and the session must end with its report and `ended_at`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from pty_rig import Emulator
from rich.console import Console
from stim_rig import stim_settings

from feedback import app


def events(db: Path, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = sqlite3.connect(db).execute(
        "SELECT kind, detail_json FROM events WHERE session_id = ? ORDER BY seq", (session_id,)
    )
    return [(kind, json.loads(detail)) for kind, detail in rows]


async def test_link_loss_mid_burst_keeps_the_driver_and_ends_the_session(
    mosquitto: Any, tmp_path: Path
) -> None:
    link = tmp_path / "emg"
    settings = stim_settings(
        **{
            "protocol.ready_s": 0.1,
            "protocol.work_s": 4.0,
            "protocol.hold_s": 1.0,
            "protocol.rest_s": 0.5,
            "stimulation.min_rest_s": 1.0,
            "stim_burst.hold_s": 2.0,
            "session.station": "linkloss",
            "mqtt.hold_without_subscriber": False,  # no subscriber here: do not wait to flush
            "mqtt.receipts": False,  # nor for a logger's receipts
        }
    )
    first = Emulator(link)
    options = app.RunOptions(
        device=f"serial:{link}",
        duration_s=6.0,
        db=str(tmp_path / "s.db"),
        broker=mosquitto.url,
        report=tmp_path / "r.json",
        live_view=False,
    )
    with open(os.devnull, "w") as devnull:
        run = asyncio.create_task(app.run(settings, options, console=Console(file=devnull)))
        deadline = time.monotonic() + 8.0
        while first.firmware.stats.commands_accepted == 0:
            assert time.monotonic() < deadline and not run.done(), "no first burst"
            await asyncio.sleep(0.005)
        await asyncio.to_thread(first.kill)  # right after the firmware took burst 1
        await asyncio.sleep(1.0)
        second = Emulator(link)
        try:
            report = await asyncio.wait_for(run, 20.0)  # before the fix: raised DeviceError
        finally:
            await asyncio.to_thread(second.kill)

    (ended_at,) = (
        sqlite3.connect(tmp_path / "s.db")
        .execute("SELECT ended_at FROM sessions WHERE id = ?", (report["session_id"],))
        .fetchone()
    )
    assert ended_at is not None and report["reconnects"] >= 1
    log = events(tmp_path / "s.db", report["session_id"])
    kinds = [k for k, _ in log]
    aborts = [d for k, d in log if k == "stim_abort"]
    assert aborts and aborts[0]["reason"] in ("link_down", "stale_data", "no_ack")
    # The abort's EmergencyStop could not be written (link down): said so, not raised.
    failed = [d["command"] for k, d in log if k == "stim_send_failed"]
    assert "EmergencyStop" in failed and "stim_driver_error" not in kinds
    # Every burst in the log went to a firmware. The kill races the first burst's StimAck (the
    # first firmware accepted it; its ack may die with the pty), so burst 1 may be unacknowledged,
    # and then an abort must follow it. The last burst may meet the end of the session before its
    # ack (then a no_ack abort says so). No other burst may go without an ack.
    acked = {d["command_id"] for k, d in log if k == "stim_ack"}
    bursts = [d["command_id"] for k, d in log if k == "stim_burst"]
    no_ack = [d for d in aborts if d["reason"] == "no_ack"]
    assert first.firmware.stats.commands_accepted == 1 and bursts and acked <= set(bursts)
    unacked = [b for b in bursts if b not in acked]
    assert set(unacked) <= {bursts[0]} | ({bursts[-1]} if no_ack else set()), (bursts, acked)
    at = [i for i, (k, _) in enumerate(log) if k == "stim_burst"] + [len(log)]
    if bursts[0] in unacked:  # its abort may even be logged before it: search from the start
        assert "stim_abort" in kinds[: at[1]], "burst 1 neither acknowledged nor aborted"
    accepted = first.firmware.stats.commands_accepted + second.firmware.stats.commands_accepted
    assert len(bursts) - len(no_ack) <= accepted <= len(bursts)
