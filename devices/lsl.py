"""Lab Streaming Layer inlet: `lsl:NAME` (or `lsl:type=EMG`) consumes an EMG stream on the network.

Delsys, the OpenBCI GUI and BrainFlow all publish there. LSL has no sample counter, so indices
count samples and a jump in the (clock-synchronised) timestamps beyond `GAP_TOLERANCE_S` moves
the index on: that is the gap. Values are converted to millivolts from each channel's
`unit` in the stream description (µV when the stream does not say; most EMG publishers use µV),
or from `unit=` in the spec. Channel roles come from the channel labels when they are roles
(VM, VL, ...), otherwise `channels=VM,VL` names the first columns.

liblsl's calls are short and non-blocking here (`pull_chunk(timeout=0)`); only resolving a stream,
which waits on the network, runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Self

import numpy as np

from devices.base import (
    DeviceError,
    DeviceInfo,
    HostCommand,
    LinkState,
    LinkStats,
    SampleBlock,
    StreamEvent,
)

log = logging.getLogger(__name__)

LSL_OPTIONS = ("channels", "unit", "timeout")
GAP_TOLERANCE_S = 0.025  # publishers stamp chunks at push time: their jitter is not a gap
SILENCE_S = 1.0  # no sample for this long: the link is reported DOWN until data flows again
_ROLE = re.compile(r"^[A-Z]{2,4}(_[LR])?$")
_TO_MV = {"uv": 1e-3, "microvolts": 1e-3, "mv": 1.0, "millivolts": 1.0, "v": 1e3, "volts": 1e3}


def unit_to_mv(unit: str) -> float | None:
    return _TO_MV.get(unit.strip().lower().replace("µ", "u").replace("μ", "u"))


class LslDevice:
    def __init__(self, spec: str, query: tuple[str, str], options: dict[str, str], block_ms: float):
        self.query = query
        self.options = options
        self.block_s = block_ms / 1000.0
        self.info = DeviceInfo(spec=spec, kind="lsl", rate_hz=0.0, channels=())
        self.stats = LinkStats()
        self._inlet: Any = None
        self._scale = np.ones(0, dtype=np.float32)
        self._n_columns = 0
        self._next_index = 0
        self._next_ts: float | None = None

    async def __aenter__(self) -> Self:
        import pylsl

        prop, value = self.query
        timeout = float(self.options.get("timeout", "5"))
        found = await asyncio.to_thread(pylsl.resolve_byprop, prop, value, 1, timeout)
        if not found:
            seen = await asyncio.to_thread(pylsl.resolve_streams, 1.0)
            names = ", ".join(f"{s.name()} ({s.type()}, {s.channel_count()} ch)" for s in seen)
            raise DeviceError(f"lsl: no stream with {prop}={value!r}; saw: {names or 'none'}")
        # No proc_dejitter: its regression smooths a jump in timestamps away, hiding the gap.
        flags = pylsl.proc_clocksync | pylsl.proc_monotonize
        inlet = pylsl.StreamInlet(found[0], max_buflen=30, recover=True, processing_flags=flags)
        full = await asyncio.to_thread(inlet.info, timeout)
        self._describe(full)
        await asyncio.to_thread(inlet.open_stream, timeout)
        self._inlet = inlet
        self.stats.state = LinkState.UP
        return self

    def _describe(self, full: Any) -> None:
        rate = float(full.nominal_srate())
        if rate <= 0:
            raise DeviceError(f"lsl: stream {full.name()!r} has no regular sample rate")
        n = int(full.channel_count())
        labels, units = [], []
        ch = full.desc().child("channels").child("channel")
        for _ in range(n):
            labels.append(ch.child_value("label"))
            units.append(ch.child_value("unit"))
            ch = ch.next_sibling()
        if "channels" in self.options:
            roles = tuple(c for c in self.options["channels"].split(",") if c)
        else:
            roles = tuple(labels)
        bad = [r for r in roles if not _ROLE.match(r)]
        if not roles or len(roles) > n or bad:
            raise DeviceError(
                f"lsl: stream {full.name()!r} has channels {labels}; name the ones to use as "
                f"roles, e.g. lsl:{full.name()}?channels=VM,VL (at most {n})"
            )
        self._n_columns = len(roles)
        scale = []
        for unit in (self.options.get("unit", u) for u in units[: len(roles)]):
            factor = unit_to_mv(unit) if unit else 1e-3  # unspecified: µV, as EMG tools send
            if factor is None:
                raise DeviceError(f"lsl: unknown unit {unit!r}; use unit=uV, mV or V")
            scale.append(factor)
        self._scale = np.asarray(scale, dtype=np.float32)[:, None]
        self.info = DeviceInfo(self.info.spec, "lsl", rate, roles, serial=str(full.source_id()))

    async def __aexit__(self, *exc: object) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
        self.stats.state = LinkState.CLOSED

    async def send(self, command: HostCommand) -> None:
        raise DeviceError("lsl: an LSL stream takes no stimulation commands")

    def take_events(self) -> list[StreamEvent]:
        return []

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        import pylsl

        last_data = time.monotonic()
        while True:
            await asyncio.sleep(self.block_s)
            data, stamps = self._inlet.pull_chunk(timeout=0.0, max_samples=65536, as_numpy=True)
            now = time.monotonic()
            if not len(stamps):
                if now - last_data > SILENCE_S and self.stats.state is LinkState.UP:
                    self.stats.state = LinkState.DOWN
                    self.stats.notes.append(f"lsl: no samples for {SILENCE_S} s")
                continue
            if self.stats.state is LinkState.DOWN:
                self._came_back(now - last_data)
            last_data = now
            to_host = time.time() - pylsl.local_clock()
            samples = np.asarray(data, dtype=np.float32)[:, : self._n_columns].T * self._scale
            yield self._block(samples, np.asarray(stamps) + to_host)

    def _came_back(self, silent_s: float) -> None:
        self.stats.state = LinkState.UP
        self.stats.reconnects += 1
        self.stats.down_s += silent_s
        self.stats.notes.append(f"lsl: samples again after {silent_s:.2f} s")

    def _block(self, samples: np.ndarray, t_host: np.ndarray) -> SampleBlock:
        rate = self.info.rate_hz
        tolerance = max(3.0 / rate, GAP_TOLERANCE_S)
        if self._next_ts is not None and t_host[0] - self._next_ts > tolerance:
            lost = round((t_host[0] - self._next_ts) * rate)
            self.stats.gaps += 1
            self.stats.samples_lost += lost
            self._next_index += lost
        block = SampleBlock(
            first_index=self._next_index,
            t_device=float(t_host[0]),
            rate_hz=rate,
            channels=self.info.channels,
            data=np.ascontiguousarray(samples, dtype=np.float32),
            t_arrival=time.time(),
        )
        self._next_index += block.n_samples
        self._next_ts = float(t_host[-1]) + 1.0 / rate
        self.stats.blocks += 1
        self.stats.samples += block.n_samples
        return block


def open_lsl(spec: str, target: str, options: dict[str, str], *, block_ms: float) -> LslDevice:
    unknown = sorted(set(options) - set(LSL_OPTIONS))
    if unknown:
        raise DeviceError(f"lsl: unknown option(s) {unknown}; allowed: {list(LSL_OPTIONS)}")
    key, sep, value = target.partition("=")
    query = (key, value) if sep and key in ("name", "type", "source_id") else ("name", target)
    if not query[1]:
        raise DeviceError("lsl: give a stream name (lsl:MyEMG) or type (lsl:type=EMG)")
    if "unit" in options and unit_to_mv(options["unit"]) is None:
        raise DeviceError(f"lsl: unit must be uV, mV or V, not {options['unit']!r}")
    try:
        float(options.get("timeout", "5"))
    except ValueError:
        raise DeviceError(f"lsl: timeout must be seconds, not {options['timeout']!r}") from None
    return LslDevice(spec, query, options, block_ms)
