"""A stepped-clock rig: StimController ⇄ host FramedSampleStream ⇄ EmulatedFirmware, in process.

Every action the controller returns becomes real protocol bytes into the emulated firmware, and
every reply goes back through the host decoder into the controller, exactly as the driver does;
only the clock is the test's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from config.loader import load_settings
from devices.base import LinkState, LinkStats
from devices.framed_stream import FramedSampleStream
from feedback.stimulation import (
    Abort,
    EStop,
    Fire,
    LinkView,
    Rearm,
    StimAction,
    StimController,
    TickView,
)
from firmware_bridge import EmergencyStop, EmergencyStopClear, Heartbeat, Message
from firmware_bridge.emulator import EmulatedFirmware, FirmwareLimits
from firmware_bridge.examples import EXAMPLE_INFO

STEP_S = 0.01
SAMPLES_PER_STEP = 20  # 10 ms at 2 kHz


def stim_settings(**overrides: Any) -> Any:
    base: dict[str, Any] = {
        "stimulation.enabled": True,
        "stimulation.min_rest_s": 2.0,
        "stim_burst.ramp_up_s": 0.2,
        "stim_burst.hold_s": 0.5,
        "stim_burst.ramp_down_s": 0.2,
    }
    base.update(overrides)
    return load_settings(environ={}, overrides=base)


class StimRig:
    def __init__(self, fw_limits: FirmwareLimits | None = None, **overrides: Any) -> None:
        self.settings = stim_settings(**overrides)
        source = lambda n: np.zeros((EXAMPLE_INFO.n_channels, n))  # noqa: E731
        self.fw = EmulatedFirmware(EXAMPLE_INFO, source, fw_limits or FirmwareLimits())
        self.stream = FramedSampleStream(LinkStats(state=LinkState.UP))
        self.ctl = StimController(self.settings.stimulation, self.settings.stim_burst, 0)
        self.now = 0.0
        self.index = 0
        self.link_up = True
        self.last_data: float | None = None
        self.actions: list[StimAction] = []
        self.lose_commands = False  # StimCommand frames vanish on the wire (no ack comes back)
        self.stream.feed(self.fw.hello(), 0.0)

    # -- wiring, as the driver does it ----------------------------------------------------------

    def to_fw(self, message: Message) -> None:
        self.from_fw(self.fw.receive_data(self.stream.connection.send(message), self.now))

    def from_fw(self, data: bytes) -> None:
        self.stream.feed(data, self.now)
        events, self.stream.events = self.stream.events, []
        for event in events:
            self.apply(self.ctl.on_device(event.message, self.now))

    def apply(self, actions: list[StimAction]) -> None:
        self.actions.extend(actions)
        for a in actions:
            if isinstance(a, Fire):
                self.ctl.sent(a.command.command_id, self.now)
                if not self.lose_commands:
                    self.to_fw(a.command)
            elif isinstance(a, Abort):
                self.to_fw(EmergencyStop())
                self.to_fw(EmergencyStopClear())
            elif isinstance(a, EStop):
                self.to_fw(EmergencyStop())
            elif isinstance(a, Rearm):
                self.to_fw(EmergencyStopClear())

    def link(self) -> LinkView:
        status = self.stream.last_status
        return LinkView(self.link_up, self.last_data, None if status is None else status.contact_ok)

    # -- driving --------------------------------------------------------------------------------

    def run(
        self,
        seconds: float,
        pct: float = 50.0,
        *,
        working: bool = True,
        period: int = 1,
        data: bool = True,
        heartbeat: bool = True,
    ) -> list[StimAction]:
        """Step the clock; with `data`, samples arrive and each block is a tick at `pct`."""
        start = len(self.actions)
        for _ in range(round(seconds / STEP_S)):
            self.now = round(self.now + STEP_S, 9)
            if heartbeat and round(self.now / STEP_S) % 10 == 0:
                self.to_fw(Heartbeat(round(self.now * 1000)))
            if data:
                self.from_fw(self.fw.advance(SAMPLES_PER_STEP, self.now))
                self.index += SAMPLES_PER_STEP
                self.last_data = self.now
                tick = TickView(working, period, pct, 30.0, self.index, 2000.0)
                self.apply(self.ctl.on_tick(tick, self.link(), self.now))
            else:
                self.from_fw(self.fw.poll(self.now))
                self.apply(self.ctl.check(self.link(), self.now))
        return self.actions[start:]


def of(kind: type, actions: list[StimAction]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]
