"""Replay a recorded file as a device: `replay:PATH[?speed=max][&channels=VM=VM,VL=VL]
[&start=SECONDS][&stream=NAME|&type=TYPE][&unit=uV]`.

The file is read in chunks as it plays by `devices.formats` (UCI text, Santuz walking CSV, CSV
with a header, the station's own `--record` CSV and EDF+, EDF+/BDF), so memory stays bounded
whatever the file's size; blocks come out on the file's own sample counter, paced at the real
rate or as fast as the consumer takes them. `rate=HZ` gives the rate of a CSV without a time
column. Only millivolt channels are replayed by default (the UCI
knee angle FX is in degrees and is not EMG); `channels=` names role=source pairs, and roles whose
source is absent are left out with a note, so `channels=VM=VM,VL=VL` works on files without VL.
`start=` skips that many seconds of every format (a loop comes back to the same point);
`stream=`/`type=` choose the stream of an XDF file (LabRecorder) and `unit=` gives the unit of
channels whose file does not say.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
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
from devices.formats import RecordingFormatError, RecordingStream, open_recording
from devices.formats.base import Chunk

log = logging.getLogger(__name__)
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


def map_channels(
    rec: RecordingStream, mapping: dict[str, str] | None
) -> tuple[RecordingStream, list[str]]:
    """Keep the mapped channels that exist (all mV channels when no mapping); say what was left."""
    notes: list[str] = []
    if mapping is None:
        mapping = {c: c for c, u in zip(rec.channels, rec.units, strict=True) if u == "mV"}
        skipped = [c for c in rec.channels if c not in mapping]
        if skipped:
            notes.append(f"not replayed (not raw EMG in mV): {', '.join(skipped)}")
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
    return rec.select(present), notes


class ReplayDevice:
    """A recorded file as a sample source, read in chunks as it plays (memory stays bounded
    whatever the file's size); the read position survives repeated `blocks()` calls, so a
    calibration flow and the session that follows share one continuous timeline. A file broken
    at its start is refused with a `DeviceError`; one broken further in plays every sample
    before the bad line, then ends as at its end, the error logged, counted
    (`stats.protocol_errors`) and kept in `stopped_by` and the notes."""

    def __init__(
        self,
        path: str | Path,
        *,
        block_ms: float = 10.0,
        realtime: bool = True,
        channels: dict[str, str] | None = None,
        spec: str | None = None,
        loop: bool = False,
        rate_hz: float | None = None,
        start_s: float = 0.0,
        units: str | None = None,
        stream: tuple[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._channels = channels
        self._rate_hz = rate_hz
        self._units = units
        self._stream = stream
        self.start_s = start_s
        self.recording, notes = self._open()
        rec = self.recording
        self.realtime = realtime
        self.loop = loop
        self.block_samples = max(1, round(block_ms * rec.rate_hz / 1000.0))
        self.info = DeviceInfo(
            spec=spec or f"replay:{path}",
            kind="replay",
            rate_hz=rec.rate_hz,
            channels=rec.channels,
            serial=self.path.name,
        )
        self.stats = LinkStats(notes=[*rec.warnings, *notes])
        self._noted = len(rec.warnings)
        self._skip = round(start_s * rec.rate_hz)  # samples before the start offset
        self._chunks = skip_samples(iter(rec), self._skip)
        self._buffer = np.zeros((len(rec.channels), 0), dtype=np.float32)
        self._at = 0  # read position inside _buffer
        self._ended = False
        self.stopped_by: RecordingFormatError | None = None  # a broken line ended the replay
        self._emitted = 0  # samples handed out: the device's own counter, never rewinds
        self.laps = 0  # times a loop came back to the start
        self._fill()  # the first chunk now: a file broken at its start fails on opening
        if self._ended and self._skip and not self._buffer.shape[1]:
            self.recording.close()
            raise DeviceError(f"replay: start={start_s:g} s is at or past the end of {self.path}")

    def _open(self) -> tuple[RecordingStream, list[str]]:
        try:
            stream = open_recording(
                self.path, rate_hz=self._rate_hz, units=self._units, stream=self._stream
            )
            return map_channels(stream, self._channels)
        except RecordingFormatError as exc:
            raise DeviceError(f"replay: {exc}") from exc
        except OSError as exc:
            raise DeviceError(f"replay: cannot open {self.path}: {exc.strerror or exc}") from exc

    def _fill(self) -> None:
        """Make sure unread samples are buffered, unless the file is at its end."""
        while self._at >= self._buffer.shape[1] and not self._ended:
            try:
                chunk = next(self._chunks, None)
            except RecordingFormatError as exc:
                if not self._emitted and not self._buffer.shape[1]:
                    raise DeviceError(f"replay: {exc}") from exc  # on opening: refuse the file
                # Mid-session: every good sample before the bad line has been read; end the
                # stream here as at the end of the file, so the session ends cleanly (records
                # closed, report written) and says why.
                self.stopped_by = exc
                self.stats.protocol_errors += 1
                self.stats.notes.append(f"replay stopped early: {exc}")
                log.error("replay stopped early: %s", exc)
                chunk = None
            finally:
                self._note_new_warnings()
            if chunk is None:
                self._ended = True
            else:
                self._buffer, self._at = chunk, 0

    def _note_new_warnings(self) -> None:
        new = self.recording.warnings[self._noted :]
        self.stats.notes.extend(new)
        self._noted += len(new)

    def _rewind(self) -> None:
        self.recording.close()
        self.recording, _ = self._open()
        self._noted = len(self.recording.warnings)  # already noted on the first pass
        self._chunks = skip_samples(iter(self.recording), self._skip)
        self._ended = False
        self._fill()

    @property
    def finished(self) -> bool:
        return self._ended and self._at >= self._buffer.shape[1] and not self.loop

    async def __aenter__(self) -> Self:
        self.stats.state = LinkState.UP
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.recording.close()
        self.stats.state = LinkState.CLOSED

    async def send(self, command: HostCommand) -> None:
        # A recording cannot be stimulated; the command is noted, never silently dropped.
        self.stats.notes.append(f"stimulation command ignored by replay: {type(command).__name__}")

    def take_events(self) -> list[StreamEvent]:
        return []  # a file has no acks, refusals or device messages

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        rate = self.recording.rate_hz
        start_wall, start_count = time.monotonic(), self._emitted
        while True:
            self._fill()
            if self._at >= self._buffer.shape[1]:
                if not self.loop or self.stopped_by is not None:
                    self.stats.state = LinkState.CLOSED
                    return
                self._rewind()  # the sample counter keeps rising: see first_index below
                if self._at >= self._buffer.shape[1]:
                    # Nothing to play after a rewind (an empty file, one emptied while
                    # looping): rewinding again would spin the event loop, never awaiting.
                    self.stats.notes.append("replay loop stopped: no samples to play")
                    self.stats.state = LinkState.CLOSED
                    return
                self.laps += 1
                continue
            if self.realtime:
                ahead = (self._emitted - start_count + self.block_samples) / rate
                delay = start_wall + ahead - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let the outputs run between blocks
            yield self._next_block()

    def _next_block(self) -> SampleBlock:
        rec = self.recording
        i = self._at
        j = min(i + self.block_samples, self._buffer.shape[1])
        data = self._buffer[:, i:j]
        self._at = j
        if j - i < self.block_samples and not self._ended:
            # A block never straddles two chunks by accident: top it up from the next one.
            self._fill()
            if self._at == 0 and self._buffer.shape[1]:
                k = min(self.block_samples - data.shape[1], self._buffer.shape[1])
                data = np.concatenate([data, self._buffer[:, :k]], axis=1)
                self._at = k
        n = data.shape[1]
        index = self._emitted
        self._emitted += n
        self.stats.blocks += 1
        self.stats.samples += n
        return SampleBlock(
            first_index=index,
            t_device=rec.t0_s + (self._skip + index) / rec.rate_hz,
            rate_hz=rec.rate_hz,
            channels=rec.channels,
            data=data,
            t_arrival=time.time(),
        )


def skip_samples(chunks: Iterator[Chunk], n: int) -> Iterator[Chunk]:
    """The chunks without their first `n` samples (the start offset)."""
    for chunk in chunks:
        if n >= chunk.shape[1]:
            n -= chunk.shape[1]
            continue
        yield chunk[:, n:] if n else chunk
        n = 0
