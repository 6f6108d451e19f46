"""One heartbeat source, tied to the processing loop: when the consumer stops taking blocks in
the middle of a burst, the firmware's 250 ms watchdog stops the output, even though the event
loop (and the stimulation driver) are still running; a consumer that keeps taking blocks never
trips it.

Over a real pty with the serial driver (the link's heartbeat), and in process with the simulator
(whose heartbeat rides on its block stream) and the stimulation driver, which sends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from stim_rig import stim_settings

from devices.firmware_pty import PtyService
from devices.link import LinkedDevice
from devices.registry import open_device
from devices.simulator import SimulatedDevice
from feedback.pipeline import Pipeline
from feedback.stimulation.driver import StimDriver
from firmware_bridge import StimCommand, StimState

WATCHDOG_S = 0.25
CONSUMER_STALE_S = 0.15
BURST = StimCommand(7, 0, 20.0, 300, 50, 200, 4000, 200)  # 4.4 s: outlives the test


async def take_blocks(device: Any, seconds: float) -> float:
    """Consume like a processing loop for `seconds`; returns when the last block was taken."""
    taken = time.monotonic()
    end = taken + seconds
    async for _ in device.blocks():
        taken = time.monotonic()
        if taken >= end:
            break
    return taken


async def watch_for_watchdog(fw: Any, seconds: float, poll: Any = None) -> float | None:
    """Keeps the event loop running (no block taken) until the firmware stops on its watchdog."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if poll is not None:
            poll(time.monotonic())  # in process, the test is the firmware's own clock
        if fw.stim_state is StimState.STOPPED_WATCHDOG:
            return time.monotonic()
        await asyncio.sleep(0.002)
    return None


async def test_serial_link_heartbeats_only_while_blocks_are_taken(
    pty_firmware: PtyService,
) -> None:
    fw = pty_firmware.firmware
    device = open_device(f"serial:{pty_firmware.path}", stim_settings())
    assert isinstance(device, LinkedDevice)
    async with device:
        await take_blocks(device, 0.3)
        await device.send(BURST)
        last_taken = await take_blocks(device, 1.0)  # a live consumer, well past the ramp
        assert fw.stim_state is StimState.HOLD and fw.stats.watchdog_trips == 0
        tripped = await watch_for_watchdog(fw, 1.5)  # the consumer hangs; the loop runs on
        assert tripped is not None, "the link kept feeding the watchdog for a dead consumer"
        withheld = device.heartbeats_withheld
    assert tripped - last_taken <= CONSUMER_STALE_S + WATCHDOG_S + 0.05  # + a beat's jitter
    assert fw.output_ma == 0.0 and fw.stats.watchdog_trips == 1 and withheld >= 1


def sim_settings() -> Any:
    return stim_settings(
        **{
            "simulator.first_rest_s": 0.2,
            "protocol.ready_s": 0.1,
            "protocol.work_s": 4.0,
            "protocol.hold_s": 1.0,
            "stim_burst.hold_s": 3.0,
            "stim_burst.stale_after_s": 1.0,  # the watchdog must act before the stale check
        }
    )


async def test_stalled_consumer_trips_the_watchdog_despite_a_live_stim_driver() -> None:
    settings = sim_settings()
    device = SimulatedDevice(settings.simulator, block_ms=10.0)
    fw = device.firmware
    log: list[tuple[str, dict[str, Any]]] = []
    driver = StimDriver(settings, device, lambda k, d: log.append((k, d)))
    pipeline = Pipeline(settings, 2000.0, ("VM", "VL"))
    driver.blank = pipeline.blanker.add
    last_taken = 0.0

    async def consume(until: Any) -> None:
        nonlocal last_taken
        async for block in device.blocks():
            last_taken = time.monotonic()
            driver.take_device_events()
            driver.on_tick(pipeline.process(block))
            if until():
                return

    async with device:
        task = asyncio.create_task(driver.run())
        try:
            await asyncio.wait_for(consume(lambda: fw.stim_state is StimState.HOLD), 3.0)
            hold_from = time.monotonic()
            await consume(lambda: time.monotonic() - hold_from > 0.5)  # live: fed
            assert fw.stim_state is StimState.HOLD and fw.stats.watchdog_trips == 0
            tripped = await watch_for_watchdog(fw, 1.0, poll=fw.poll)  # consumer hangs
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert tripped is not None, "the stimulation driver kept the watchdog fed"
    assert tripped - last_taken <= WATCHDOG_S + 0.01  # + one 10 ms block
    assert fw.stats.watchdog_trips == 1 and fw.output_ma == 0.0
    # the firmware stopped it, not a host check (the only abort is the one at the end)
    assert [d["reason"] for k, d in log if k == "stim_abort"] in ([], ["session_ended"])
