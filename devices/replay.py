"""Replay a recorded file as a device: `replay:PATH[?speed=max][&channels=VM=VM,VL=VL]`.

The file is read once by `devices.recording_formats` (UCI text, Santuz walking CSV, CSV with a
header, EDF+/BDF); blocks then come out on the file's own sample counter, paced at the real rate
or as fast as the consumer takes them. Only millivolt channels are replayed by default (the UCI
knee angle FX is in degrees and is not EMG); `channels=` names role=source pairs, and roles whose
source is absent are left out with a note, so `channels=VM=VM,VL=VL` works on files without VL.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

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
from devices.recording_formats import Recording, RecordingFormatError, load_recording

_ROLE = re.compile(r"^[A-Za-z][A-Za-z0-9_ -]{0,31}$")


def parse_channel_map(text: str) -> dict[str, str]:
    """`VM=VM,VL=EMG VL` → {"VM": "VM", "VL": "EMG VL"}; a bare `VM` maps VM to itself."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, _, source = part.partition("=")
        role, source = role.strip(), (source.strip() or role.strip())
        if not _ROLE.match(role):
            raise DeviceError(f"replay: bad channel role {role!r} in channels={text!r}")
        mapping[role] = source
    if not mapping:
        raise DeviceError(f"replay: channels={text!r} names no channel")
    return mapping


def map_channels(rec: Recording, mapping: dict[str, str] | None) -> tuple[Recording, list[str]]:
    """Keep the mapped channels that exist (all mV channels when no mapping); say what was left."""
    notes: list[str] = []
    if mapping is None:
        mapping = {c: c for c, u in zip(rec.channels, rec.units, strict=True) if u == "mV"}
        skipped = [c for c in rec.channels if c not in mapping]
        if skipped:
            notes.append(f"not replayed (not EMG in mV): {', '.join(skipped)}")
    folded = {c.casefold() for c in rec.channels}
    present = {r: s for r, s in mapping.items() if s.casefold() in folded}
    absent = [f"{r}={s}" for r, s in mapping.items() if r not in present]
    if absent:
        notes.append(f"not in this recording, left out: {', '.join(absent)}")
    if not present:
        raise DeviceError(
            f"replay: none of the channels {list(mapping)} is in {rec.source}; "
            f"it has {', '.join(rec.channels)}"
        )
    return _select(rec, present), notes


def _select(rec: Recording, mapping: dict[str, str]) -> Recording:
    from devices.recording_formats import select_channels

    return select_channels(rec, mapping)


class ReplayDevice:
    """A recorded file as a sample source; the read position survives repeated `blocks()` calls,
    so a calibration flow and the session that follows share one continuous timeline."""

    def __init__(
        self,
        path: str | Path,
        *,
        block_ms: float = 10.0,
        realtime: bool = True,
        channels: dict[str, str] | None = None,
        spec: str | None = None,
        loop: bool = False,
    ) -> None:
        try:
            rec = load_recording(path)
        except RecordingFormatError as exc:
            raise DeviceError(f"replay: {exc}") from exc
        except OSError as exc:
            raise DeviceError(f"replay: cannot open {path}: {exc.strerror or exc}") from exc
        self.recording, notes = map_channels(rec, channels)
        self.realtime = realtime
        self.loop = loop
        self.block_samples = max(1, round(block_ms * self.recording.rate_hz / 1000.0))
        self.info = DeviceInfo(
            spec=spec or f"replay:{path}",
            kind="replay",
            rate_hz=self.recording.rate_hz,
            channels=self.recording.channels,
            serial=Path(path).name,
        )
        self.stats = LinkStats(notes=[*rec.warnings, *notes])
        self._position = 0
        self._emitted = 0  # samples handed out: the device's own counter, never rewinds
        self._data = np.ascontiguousarray(self.recording.data)

    @property
    def finished(self) -> bool:
        return self._position >= self.recording.n_samples and not self.loop

    async def __aenter__(self) -> Self:
        self.stats.state = LinkState.UP
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stats.state = LinkState.CLOSED

    async def send(self, command: HostCommand) -> None:
        # A recording cannot be stimulated; the command is noted, never silently dropped.
        self.stats.notes.append(f"stimulation command ignored by replay: {type(command).__name__}")

    def take_events(self) -> list[StreamEvent]:
        return []  # a file has no acks, refusals or device messages

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        rec = self.recording
        n_total = rec.n_samples
        start_wall, start_pos = time.monotonic(), self._position
        while True:
            if self._position >= n_total:
                if not self.loop:
                    self.stats.state = LinkState.CLOSED
                    return
                self._position = 0  # the sample counter keeps rising: see first_index below
            if self.realtime:
                ahead = (self._position - start_pos + self.block_samples) / rec.rate_hz
                delay = start_wall + ahead - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let the outputs run between blocks
            yield self._next_block()

    def _next_block(self) -> SampleBlock:
        rec = self.recording
        i = self._position
        j = min(i + self.block_samples, rec.n_samples)
        self._position = j
        index = self._emitted
        self._emitted += j - i
        self.stats.blocks += 1
        self.stats.samples += j - i
        return SampleBlock(
            first_index=index,
            t_device=rec.t0_s + index / rec.rate_hz,
            rate_hz=rec.rate_hz,
            channels=rec.channels,
            data=self._data[:, i:j],
            t_arrival=time.time(),
        )
