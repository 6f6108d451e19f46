"""Publishes the processed envelope and activation as LSL streams, for lab recorders (LabRecorder).

Two regular-rate float32 streams at the device's sample rate, one channel per role:
`<prefix>-envelope` (type `EMG-envelope`, mV) and `<prefix>-activation` (type `Activation`, % MVC).
`push_chunk` only copies into liblsl's send buffer, so it is safe to call from the session loop:
a slow or absent consumer costs nothing here. Each chunk is stamped with the arrival time of its
last sample (LSL clock), so recorded streams line up with the raw EMG stream.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from feedback.outputs.base import BlockDone, Item, Policy, SessionOpened, idle
from feedback.pipeline import Tick


class LslOutlet:
    def __init__(
        self, prefix: str, rate_hz: float, channels: tuple[str, ...], source_id: str
    ) -> None:
        import pylsl

        self._pylsl = pylsl
        self.pushed = 0
        self.envelope = self._outlet(
            pylsl, f"{prefix}-envelope", "EMG-envelope", rate_hz, channels, "millivolts", source_id
        )
        self.activation = self._outlet(
            pylsl, f"{prefix}-activation", "Activation", rate_hz, channels, "percent", source_id
        )

    @staticmethod
    def _outlet(
        pylsl: Any,
        name: str,
        kind: str,
        rate_hz: float,
        channels: tuple[str, ...],
        unit: str,
        source_id: str,
    ) -> Any:
        info = pylsl.StreamInfo(
            name, kind, len(channels), rate_hz, "float32", f"{source_id}-{kind}"
        )
        chans = info.desc().append_child("channels")
        for role in channels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", role)
            ch.append_child_value("unit", unit)
        return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=30)

    def publish(self, tick: Tick) -> None:
        """Non-blocking: copies the block into liblsl's buffers."""
        processed = tick.processed
        stamp = processed.block.t_arrival - time.time() + self._pylsl.local_clock()
        self.envelope.push_chunk(np.ascontiguousarray(processed.envelope.T, np.float32), stamp)
        self.activation.push_chunk(np.ascontiguousarray(processed.pct_mvc.T, np.float32), stamp)
        self.pushed += processed.block.n_samples


class LslOutput:
    """`lsl.publish` as an output: the outlets open with the session (they carry its id)."""

    name = "lsl"
    policy = Policy.LATEST_WINS  # liblsl's own bounded buffer: a slow consumer loses old data
    restartable = True

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.outlet: LslOutlet | None = None

    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone) and self.outlet is not None:
            self.outlet.publish(item.tick)
        elif isinstance(item, SessionOpened):
            d = item.device
            self.outlet = LslOutlet(self.prefix, d.rate_hz, d.channels, item.session_id)

    async def run(self) -> None:
        await idle()

    async def drained(self, timeout_s: float) -> bool:
        return True
