"""StimDriver with the simulated amplifier: real protocol bytes into the emulated firmware."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from stim_rig import stim_settings

from devices.simulator import SimulatedDevice
from feedback.pipeline import Pipeline
from feedback.stimulation.driver import StimDriver
from firmware_bridge import StimState


def settings() -> Any:
    return stim_settings(
        **{
            "simulator.first_rest_s": 0.2,
            "protocol.ready_s": 0.1,
            "protocol.work_s": 1.5,
            "protocol.hold_s": 1.0,
            "protocol.rest_s": 0.5,
            "stim_burst.hold_s": 1.5,
        }
    )


class Harness:
    def __init__(self) -> None:
        self.settings = settings()
        self.device = SimulatedDevice(self.settings.simulator, block_ms=10.0)
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.driver = StimDriver(self.settings, self.device, lambda k, d: self.log.append((k, d)))
        self.pipeline = Pipeline(self.settings, 2000.0, ("VM", "VL"))
        self.driver.blank = self.pipeline.blanker.add
        self.blanked = 0

    def kinds(self) -> list[str]:
        return [k for k, _ in self.log]

    async def consume_until(self, predicate: Any, timeout_s: float = 3.0) -> None:
        async def loop() -> None:
            async for block in self.device.blocks():
                tick = self.pipeline.process(block)
                assert tick.blanked is not None
                self.blanked += int(tick.blanked.sum())
                self.driver.on_tick(tick)
                if predicate():
                    return

        await asyncio.wait_for(loop(), timeout_s)


async def run_with_driver(h: Harness, body: Any) -> None:
    async with h.device:
        task = asyncio.create_task(h.driver.run())
        try:
            await body()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_burst_is_sent_logged_and_blanks_emg() -> None:
    h = Harness()
    fw = h.device.firmware

    async def body() -> None:
        await h.consume_until(lambda: fw.stim_state.stimulating)
        await h.consume_until(lambda: h.blanked > 400)

    await run_with_driver(h, body)
    kind, burst = h.log[0]
    assert kind == "stim_burst" and burst["amplitude_ma"] == 20.0 and burst["burst"] == 1
    assert fw.stats.commands_accepted == 1 and h.blanked > 400
    # the session ended mid-burst: the driver stopped it on the way out
    assert "stim_abort" in h.kinds() and fw.stim_state is StimState.IDLE


async def test_emergency_stop_is_immediate_and_acknowledged() -> None:
    h = Harness()
    fw = h.device.firmware

    async def body() -> None:
        await h.consume_until(lambda: fw.stim_state.stimulating)
        latency = await h.driver.emergency_stop("key")
        assert latency is not None and latency < 0.5
        assert fw.output_ma == 0.0 and fw.estop_latched
        await h.consume_until(lambda: h.pipeline.exercise.state.period >= 2, timeout_s=4.0)

    await run_with_driver(h, body)
    kinds = h.kinds()
    assert kinds[:3] == ["stim_burst", "stim_estop", "stim_end"]
    assert "stim_estop_ack" in kinds
    assert ("stim_refused", {"reason": "estop_latched", "detail": "", "period": 2}) in h.log
    assert fw.estop_latched and fw.stats.commands_accepted == 1  # the abort did not clear it


async def test_stale_data_aborts_the_burst_before_the_watchdog() -> None:
    h = Harness()
    fw = h.device.firmware

    async def body() -> None:
        await h.consume_until(lambda: fw.stim_state.stimulating)
        await asyncio.sleep(0.4)  # processing stalls: no blocks, but the driver keeps checking
        fw.poll(asyncio.get_running_loop().time())

    await run_with_driver(h, body)
    aborts = [d for k, d in h.log if k == "stim_abort"]
    assert aborts and aborts[0]["reason"] == "stale_data"
    assert fw.stim_state is StimState.IDLE and fw.stats.watchdog_trips == 0
    assert not fw.estop_latched
