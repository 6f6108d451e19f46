"""Publishes the processed envelope and activation as LSL streams, for lab recorders (LabRecorder),
and the session's events as a marker stream beside them (feedback.outputs.lsl_markers).

Two regular-rate float32 streams at the device's sample rate, one channel per role:
`<prefix>-envelope` (type `EMG-envelope`, mV) and `<prefix>-activation` (type `Activation`, % MVC).
Their descriptions follow the XDF meta-data conventions that LabRecorder stores and pyxdf, MNE
and EEGLAB read: `desc/channels/channel` with `label`, `unit`, `type` and `muscle`, and
`desc/acquisition` with `manufacturer` and `model`.
`push_chunk` only copies into liblsl's send buffer, so it is safe to call from the session loop:
a slow or absent consumer costs nothing here. Each chunk is stamped with the arrival time of its
last sample (LSL clock), so recorded streams line up with the raw EMG stream; the marker stream
reuses exactly that stamping (`SampleClock`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from feedback.outputs.lsl_markers import MarkerOutlet, SampleClock
from feedback.pipeline import Tick

MANUFACTURER = "vm-feedback"
# Per stream: LSL content type, channel type (XDF/MNE vocabulary), unit, what the model computed.
_ENVELOPE = ("EMG-envelope", "EMG", "millivolts", "EMG envelope (band-pass, rectify, low-pass)")
_ACTIVATION = ("Activation", "misc", "percent", "activation, % of maximal voluntary contraction")


class LslOutlet:
    def __init__(
        self, prefix: str, rate_hz: float, channels: tuple[str, ...], source_id: str
    ) -> None:
        import pylsl

        self._pylsl = pylsl
        self.pushed = 0
        self.envelope = self._outlet(
            pylsl, f"{prefix}-envelope", _ENVELOPE, rate_hz, channels, source_id
        )
        self.activation = self._outlet(
            pylsl, f"{prefix}-activation", _ACTIVATION, rate_hz, channels, source_id
        )
        self.clock = SampleClock(rate_hz)
        self.markers = MarkerOutlet(prefix, source_id, self.clock)

    @staticmethod
    def _outlet(
        pylsl: Any,
        name: str,
        kind: tuple[str, str, str, str],
        rate_hz: float,
        channels: tuple[str, ...],
        source_id: str,
    ) -> Any:
        content, ch_type, unit, model = kind
        info = pylsl.StreamInfo(
            name, content, len(channels), rate_hz, "float32", f"{source_id}-{content}"
        )
        desc = info.desc()
        chans = desc.append_child("channels")
        for role in channels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", role)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", ch_type)
            ch.append_child_value("muscle", role)
        acq = desc.append_child("acquisition")
        acq.append_child_value("manufacturer", MANUFACTURER)
        acq.append_child_value("model", model)
        return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=30)

    def publish(self, tick: Tick) -> None:
        """Non-blocking: copies the block into liblsl's buffers, then the block's markers."""
        processed = tick.processed
        block = processed.block
        stamp = block.t_arrival - time.time() + self._pylsl.local_clock()
        self.envelope.push_chunk(np.ascontiguousarray(processed.envelope.T, np.float32), stamp)
        self.activation.push_chunk(np.ascontiguousarray(processed.pct_mvc.T, np.float32), stamp)
        self.pushed += block.n_samples
        self.clock.add(block.first_index, block.n_samples, stamp)
        self.markers.on_tick(tick)

    def on_message(self, kind: str, body: dict[str, Any]) -> None:
        """A session message (event, rep, start, end) as a marker."""
        self.markers.on_message(kind, body)
