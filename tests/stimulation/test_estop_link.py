"""Emergency stop while the link is down, over a real pty with the serial driver: the host
latches at once (no further bursts), says the stop was not sent, cannot be re-armed while the
device is unreachable, and sends the stop again as soon as a device comes back on the path, so a
device that rebooted meanwhile is latched too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pty_rig import Emulator
from stim_rig import stim_settings

from devices.base import LinkState
from devices.registry import open_device
from feedback.pipeline import Pipeline
from feedback.stimulation.driver import StimDriver
from firmware_bridge import StimState


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.005)


async def test_estop_with_the_link_down_latches_and_is_resent_on_reconnect(
    tmp_path: Path,
) -> None:
    link = tmp_path / "emg"
    first = Emulator(link)
    settings = stim_settings(**{"protocol.ready_s": 0.1, "stim_burst.hold_s": 3.0})
    device = open_device(f"serial:{link}", settings)
    log: list[tuple[str, dict[str, Any]]] = []
    driver = StimDriver(settings, device, lambda k, d: log.append((k, d)))
    pipeline = Pipeline(settings, 2000.0, ("VM", "VL"))
    driver.blank = pipeline.blanker.add
    kinds = lambda: [k for k, _ in log]  # noqa: E731

    async def consume() -> None:  # the session's processing loop, on its own task
        async for block in device.blocks():
            driver.take_device_events()
            driver.on_tick(pipeline.process(block))

    second: Emulator | None = None
    async with device:
        run = asyncio.create_task(driver.run())
        loop = asyncio.create_task(consume())
        try:
            await wait_until(lambda: first.firmware.stim_state.stimulating, 5.0, "no burst")
            await asyncio.to_thread(first.kill)
            await wait_until(lambda: device.stats.state is not LinkState.UP, 2.0, "link up")
            assert await driver.emergency_stop("key") is None  # before the fix: DeviceError
            assert driver.state == "estop"  # latched on the host, whatever the device did
            assert ("stim_estop", {"source": "key"}) in log
            assert "stim_estop_not_sent" in kinds()
            assert not await driver.rearm("therapist")  # the device cannot be told: stays
            assert driver.state == "estop"
            assert ("EmergencyStopClear", "stim_send_failed") in [
                (d.get("command"), k) for k, d in log
            ]
            second = Emulator(link)  # a rebooted device: not latched
            assert not second.firmware.estop_latched
            await wait_until(lambda: second.firmware.estop_latched, 8.0, "no stop on reconnect")
            await wait_until(lambda: "stim_estop_ack" in kinds(), 2.0, "no ack")
            await asyncio.sleep(0.5)  # ticks flow again: still no burst
        finally:
            for task in (loop, run):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            first.kill()
            if second is not None:
                second.kill()
    assert ("stim_estop", {"source": "reconnect"}) in log
    assert second.firmware.stats.commands_accepted == 0
    assert second.firmware.stim_state is StimState.STOPPED_ESTOP
    assert kinds().count("stim_burst") == 1
