"""Interlocks through the real serial driver (`serial:` over pyserial-asyncio-fast) against the
emulated firmware served on a real pty (firmware_bridge.pty_service, in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from stim_rig import stim_settings

from devices.registry import open_device
from feedback.pipeline import Pipeline
from feedback.stimulation.driver import StimDriver
from firmware_bridge import StimState
from firmware_bridge.emulator import EmulatedFirmware
from firmware_bridge.pty_service import PtyService


class SerialHarness:
    def __init__(self, service: PtyService) -> None:
        self.settings = stim_settings(**{"protocol.ready_s": 0.1, "stim_burst.hold_s": 1.5})
        self.fw: EmulatedFirmware = service.firmware
        self.device = open_device(f"serial:{service.path}", self.settings)
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.driver = StimDriver(self.settings, self.device, lambda k, d: self.log.append((k, d)))
        self.pipeline = Pipeline(self.settings, 2000.0, ("VM", "VL"))
        self.driver.blank = self.pipeline.blanker.add

    def kinds(self) -> list[str]:
        return [k for k, _ in self.log]

    async def consume_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async def loop() -> None:
            async for block in self.device.blocks():
                self.driver.take_device_events()
                self.driver.on_tick(self.pipeline.process(block))
                if predicate():
                    return

        await asyncio.wait_for(loop(), timeout_s)

    async def run(self, body: Callable[[], Awaitable[None]]) -> None:
        async with self.device:
            task = asyncio.create_task(self.driver.run())
            try:
                await body()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_burst_and_emergency_stop_over_the_pty(pty_firmware: PtyService) -> None:
    h = SerialHarness(pty_firmware)
    latency: list[float | None] = []

    async def body() -> None:
        await h.consume_until(lambda: h.fw.stim_state.stimulating)  # VM contracts at 1.3 s
        # As in a session: the serial reader (hence the ack) runs while the e-stop is awaited.
        reader = asyncio.create_task(h.consume_until(lambda: False, 3.0))
        latency.append(await h.driver.emergency_stop("key"))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

    await h.run(body)
    assert latency[0] is not None and latency[0] < 0.5
    assert h.fw.estop_latched and h.fw.output_ma == 0.0
    assert h.fw.stim_state is StimState.STOPPED_ESTOP
    kinds = h.kinds()
    assert kinds.index("stim_burst") < kinds.index("stim_estop") < kinds.index("stim_estop_ack")
    assert "stim_ack" in kinds  # the firmware's acceptance, described from the device event


async def test_no_electrode_contact_refuses_over_the_pty(pty_firmware: PtyService) -> None:
    h = SerialHarness(pty_firmware)
    h.fw.set_contact(0, False)

    async def body() -> None:
        await h.consume_until(lambda: "stim_refused" in h.kinds())

    await h.run(body)
    refused = [d for k, d in h.log if k == "stim_refused"]
    assert refused[0]["reason"] == "no_contact"
    assert h.fw.stats.commands_accepted == 0


async def test_stale_data_stops_the_burst_over_the_pty(pty_firmware: PtyService) -> None:
    h = SerialHarness(pty_firmware)

    async def body() -> None:
        # Until the host has read the firmware's StimAck: stalling earlier (the firmware already
        # stimulating, its ack still unread in the pty) tests the ack deadline, not stale data.
        await h.consume_until(lambda: "stim_ack" in h.kinds())
        await asyncio.sleep(0.5)  # processing stalls; the driver's own checks go on

    await h.run(body)
    aborts = [d for k, d in h.log if k == "stim_abort"]
    assert aborts and aborts[0]["reason"] == "stale_data"
    await asyncio.sleep(0.05)
    assert not h.fw.stim_state.stimulating and not h.fw.estop_latched
