"""The processed record of a session: raw channels, envelopes, activation and events, as EDF+
(with annotations) and/or CSV, so that clinicians can open it elsewhere and tests can check it.

Lossless by design: the session calls `put(tick)` (never blocks); a writer task drains the
backlog in a worker thread, so slow disks never stall processing. The backlog is bounded
(MAX_BACKLOG_BLOCKS, minutes of a stalled disk): past it `put` raises `OutputFull`, counted
and logged by the runner, never a silent drop. EDF+ is written in
whole 1 s data records, so samples are buffered until a full second is there; the last partial
record is padded and the true end is marked with an annotation.

Crash-safe: after kill -9 the EDF+ is valid up to its last whole record, annotations included
(each record carries the events that arrived with it, and the header's record count is updated
after every record), and the CSV files hold every row handed to the writer (flushed per chunk).
`python -m feedback.outputs.repair FILE.edf` fixes files left by versions before this one.
`--record PATH`: `.edf` → EDF+, `.csv` → CSV, anything else → both.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from feedback.exercise import RepCompleted
from feedback.outputs.base import BlockDone, Item, OutputFull, Policy, SessionOpened
from feedback.outputs.edf_writer import EdfPlusWriter, SignalSpec
from feedback.pipeline import Tick
from feedback.processing.metrics import Contraction

log = logging.getLogger(__name__)
ANNOTATION_BYTES = 8192  # per 1 s record: room for ~80 events a second; more wait a record
EQUIPMENT = "vm-feedback"  # the EDF+ equipment subfield; replay knows its own records by it
FSYNC_EVERY_S = 1.0
MAX_BACKLOG_BLOCKS = 60_000  # 10 min of 10 ms blocks; a disk that far behind is a fault
RAW_RANGE_MV = 16.384  # ±, 0.5 µV resolution in EDF's 16 bits; clipped values are flagged anyway


@dataclass(frozen=True, slots=True)
class Event:
    index: int
    kind: str  # onset | offset | contraction | rep | cue
    channel: str
    detail: str


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    first_index: int
    raw: np.ndarray
    envelope: np.ndarray
    pct: np.ndarray
    active: np.ndarray
    flags: np.ndarray
    zone: np.ndarray
    events: tuple[Event, ...]


def record_paths(path: Path) -> dict[str, Path]:
    suffix = path.suffix.lower()
    if suffix == ".edf":
        return {"edf": path}
    if suffix == ".csv":
        return {"csv": path}
    return {"edf": path.with_name(path.name + ".edf"), "csv": path.with_name(path.name + ".csv")}


def events_of(tick: Tick) -> tuple[Event, ...]:
    out: list[Event] = []
    if tick.onsets is not None:
        out += [
            Event(e.at_index, e.kind, e.channel, f"detected at {e.detected_index}")
            for e in tick.onsets.events
        ]
    for c in tick.contractions:
        out.append(
            Event(
                c.offset_index,
                "contraction",
                c.channel,
                f"#{c.number} {c.duration_s:.2f}s peak {_peak(c)} "
                f"hold {_fmt(c.longest_hold_s, 2)}s in band {c.hold_in_band_s:.2f}s "
                f"MDF {_fmt(c.median_freq_hz)}Hz "
                f"VM-VL {_fmt(c.vm_vl_onset_ms)}ms",
            )
        )
    out += [
        Event(ev.at_index, "rep", "", f"rep {ev.rep}")
        for ev in tick.exercise.events
        if isinstance(ev, RepCompleted)
    ]
    out += [Event(c.index, "cue", "", f"{c.kind} {c.value}") for c in tick.cues]
    return tuple(out)


def _peak(c: Contraction) -> str:
    # Without a calibration the % MVC rests on a placeholder: the record keeps the envelope.
    if c.calibrated or c.peak_mv is None:
        return f"{c.peak_pct:.0f}%MVC"
    return f"{c.peak_mv * 1000:.0f}uV (uncalibrated)"


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


class Recorder:
    def __init__(
        self,
        path: Path,
        *,
        rate_hz: float,
        channels: tuple[str, ...],
        session_id: str,
        patient: str,
        group_delay_ms: float,
        capacity: int = MAX_BACKLOG_BLOCKS,
    ) -> None:
        self.paths = record_paths(path)
        self.capacity = capacity
        self.refused = 0  # blocks not taken because the backlog was full
        self.rate_hz = rate_hz
        self.channels = channels
        self.session_id = session_id
        self.patient = patient
        self.group_delay_ms = group_delay_ms
        self._queue: collections.deque[Chunk] = collections.deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._origin: int | None = None
        self.samples_written = 0
        self.events_written = 0
        self.max_backlog = 0
        self._writers: list[_EdfWriter | _CsvWriter] = []
        if "edf" in self.paths:
            self._writers.append(_EdfWriter(self.paths["edf"], self))
        if "csv" in self.paths:
            self._writers.append(_CsvWriter(self.paths["csv"], self))

    # -- the loop side: never blocks -------------------------------------------------------
    def put(self, tick: Tick) -> None:
        if len(self._queue) >= self.capacity:
            self.refused += 1
            raise OutputFull("recorder", self.capacity)
        p = tick.processed
        assert tick.onsets is not None and tick.quality is not None
        self._queue.append(
            Chunk(
                p.block.first_index,
                p.block.data,
                p.envelope,
                p.pct_mvc,
                tick.onsets.active,
                tick.quality.flags,
                tick.zone,
                events_of(tick),
            )
        )
        self.max_backlog = max(self.max_backlog, len(self._queue))
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()

    async def _drain(self) -> None:
        # One writer at a time: `close` must wait for a batch the `run` task is still writing,
        # or the files would be closed under it and the batch lost or written out of order.
        async with self._lock:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(len(self._queue))]
                await asyncio.to_thread(self._write, batch)

    async def close(self) -> dict[str, Any]:
        await self._drain()
        await asyncio.to_thread(self._close_writers)
        return {
            "paths": {k: str(v) for k, v in self.paths.items()},
            "samples": self.samples_written,
            "events": self.events_written,
            "max_backlog_blocks": self.max_backlog,
            "blocks_refused": self.refused,
        }

    # -- the worker thread -----------------------------------------------------------------
    def _write(self, batch: list[Chunk]) -> None:
        if self._origin is None:
            self._origin = batch[0].first_index
        for chunk in batch:
            for w in self._writers:
                w.write(chunk, self._origin)
            self.samples_written += chunk.raw.shape[1]
            self.events_written += len(chunk.events)

    def _close_writers(self) -> None:
        for w in self._writers:
            w.close(self._origin or 0)


class _CsvWriter:
    """`PATH.csv` one row per sample; `PATH.events.csv` one row per event.

    Flush policy: both files are handed to the OS after every chunk (the events file is
    line-buffered as well), so a killed process loses nothing it had written; `fsync` runs at
    most once per `FSYNC_EVERY_S`, so a power cut loses at most about that much."""

    def __init__(self, path: Path, rec: Recorder) -> None:
        self.rec = rec
        path.parent.mkdir(parents=True, exist_ok=True)
        self._samples: IO[str] = path.open("w", newline="")
        events_path = path.with_name(path.name.removesuffix(".csv") + ".events.csv")
        self._events_file: IO[str] = events_path.open("w", newline="", buffering=1)
        self._events = csv.writer(self._events_file)
        self._synced_at = time.monotonic()
        ch = rec.channels
        header = ["index", "t_s"]
        for suffix in ("mV", "env_mV", "pct_mvc", "active", "quality"):
            header += [f"{c}_{suffix}" for c in ch]
        self._samples.write(",".join([*header, "zone"]) + "\n")
        self._events.writerow(["index", "t_s", "kind", "channel", "detail"])
        self._sync(force=True)

    def write(self, chunk: Chunk, origin: int) -> None:
        n = chunk.raw.shape[1]
        index = chunk.first_index + np.arange(n)
        t = (index - origin) / self.rec.rate_hz
        cols = np.vstack(
            [index, t, chunk.raw, chunk.envelope, chunk.pct, chunk.active, chunk.flags, chunk.zone]
        ).T
        c = len(self.rec.channels)
        fmt = ["%d", "%.4f"] + ["%.6g"] * (3 * c) + ["%d"] * (2 * c + 1)
        np.savetxt(self._samples, cols, fmt=fmt, delimiter=",")
        for e in chunk.events:
            t_s = (e.index - origin) / self.rec.rate_hz
            self._events.writerow([e.index, f"{t_s:.4f}", e.kind, e.channel, e.detail])
        self._samples.flush()
        self._sync()

    def _sync(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._synced_at >= FSYNC_EVERY_S:
            for f in (self._samples, self._events_file):
                f.flush()
                os.fsync(f.fileno())
            self._synced_at = now

    def close(self, origin: int) -> None:
        self._sync(force=True)
        self._samples.close()
        self._events_file.close()


class _EdfWriter:
    """EDF+ with 1 s data records: per channel raw (mV), envelope (mV), active (0/1) and
    quality flags, plus the target zone; events as EDF+ annotations written with the record
    in which they arrive, so that a crash keeps them (see `feedback.outputs.edf_writer`)."""

    def __init__(self, path: Path, rec: Recorder) -> None:
        self.rec = rec
        signals = [SignalSpec(c, "mV", -RAW_RANGE_MV, RAW_RANGE_MV) for c in rec.channels]
        signals += [SignalSpec(f"{c} env", "mV", 0.0, RAW_RANGE_MV) for c in rec.channels]
        signals += [SignalSpec(f"{c} active", "", 0.0, 1.0, 0, 1) for c in rec.channels]
        signals += [SignalSpec(f"{c} quality", "", 0.0, 15.0, 0, 15) for c in rec.channels]
        signals.append(SignalSpec("zone", "", 0.0, 2.0, 0, 2))
        self._w = EdfPlusWriter(
            path,
            signals,
            rate_hz=rec.rate_hz,
            patient_code=rec.patient,  # pseudonymous id only
            equipment=EQUIPMENT,
            # EDF+ header subfields: ASCII, no spaces, 80 characters with the equipment field.
            recording_additional=f"{rec.session_id}_delay_{rec.group_delay_ms:.1f}ms",
            annotation_bytes=ANNOTATION_BYTES,
        )
        self.per_record = self._w.per_record
        self._buf: list[np.ndarray] = []
        self._buffered = 0

    def write(self, chunk: Chunk, origin: int) -> None:
        rows = np.vstack(
            [
                np.clip(chunk.raw, -RAW_RANGE_MV, RAW_RANGE_MV),
                np.clip(chunk.envelope, 0.0, RAW_RANGE_MV),
                chunk.active,
                chunk.flags,
                chunk.zone[None, :],
            ]
        ).astype(np.float64)
        self._buf.append(rows)
        self._buffered += rows.shape[1]
        for e in chunk.events:
            text = " ".join(filter(None, (e.kind, e.channel, e.detail)))
            self._w.annotate((e.index - origin) / self.rec.rate_hz, text[:80])
        while self._buffered >= self.per_record:
            self._flush_record()

    def _flush_record(self, pad: bool = False) -> None:
        data = np.concatenate(self._buf, axis=1)
        record, rest = data[:, : self.per_record], data[:, self.per_record :]
        if pad and record.shape[1] < self.per_record:
            record = np.pad(record, ((0, 0), (0, self.per_record - record.shape[1])))
        self._w.write_record(record)
        self._buf = [rest] if rest.shape[1] else []
        self._buffered = rest.shape[1]

    def close(self, origin: int) -> None:
        r = self.rec
        try:
            if self._buffered:
                end_s = r.samples_written / r.rate_hz
                self._w.annotate(end_s, "recording ends (rest of record is padding)")
                self._flush_record(pad=True)
            if self._w.annotations_pending:
                # No record left to carry them; say so where the clinician looks.
                more = self._w.annotations_pending
                log.warning("EDF+: %d events beyond the annotation room; all are in the CSV", more)
        finally:
            self._w.close()


class RecorderOutput:
    """`--record PATH` as an output: the recorder is made when the session opens (its header
    needs the session, the device and the chain's delay), then takes every block."""

    name = "recorder"
    policy = Policy.LOSSLESS
    restartable = False  # its open files would not survive a restart

    def __init__(self, path: Path) -> None:
        self.path = path
        self.recorder: Recorder | None = None
        self._opened = asyncio.Event()

    def offer(self, item: Item) -> None:
        if isinstance(item, BlockDone) and self.recorder is not None:
            self.recorder.put(item.tick)
        elif isinstance(item, SessionOpened):
            self.recorder = Recorder(
                self.path,
                rate_hz=item.device.rate_hz,
                channels=item.device.channels,
                session_id=item.session_id,
                patient=item.settings.session.patient,
                group_delay_ms=item.group_delay_ms,
            )
            self._opened.set()

    async def run(self) -> None:
        await self._opened.wait()
        assert self.recorder is not None
        await self.recorder.run()

    async def drained(self, timeout_s: float) -> bool:
        return True  # `close` drains and closes the files: the recording's end is its own step

    async def close(self) -> dict[str, Any] | None:
        """Write what is queued, close the files; the record's summary for the report."""
        return None if self.recorder is None else await self.recorder.close()
