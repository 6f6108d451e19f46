"""The processed record of a session: raw channels, envelopes, activation and events, as EDF+
or BDF+ (with annotations) and/or CSV, so that clinicians can open it elsewhere and tests can
check it. docs/recording.md describes the headers, the annotations and the gap rule.

Lossless by design: the session calls `put(tick)` (never blocks); a writer task drains the
backlog in a worker thread, so slow disks never stall processing. The backlog is bounded
(MAX_BACKLOG_BLOCKS, minutes of a stalled disk): past it `put` raises `OutputFull`, counted
and logged by the runner, and the block missing from the record is a gap there. EDF+ is written in
whole 1 s data records, so samples are buffered until a full second is there; the last partial
record is padded and the true end is marked with an annotation.

Crash-safe: after kill -9 the EDF+ is valid up to its last whole record, annotations included
(each record carries the events that arrived with it, and the header's record count is updated
after every record), and the CSV files hold every row handed to the writer (flushed per chunk).
`python -m feedback.outputs.repair FILE.edf` fixes files left by versions before this one.
`--record PATH`: `.edf` → EDF+, `.bdf` → BDF+, `.csv` → CSV, anything else → both (the
format of the EDF-family file from `[recording] format`, see `RecordOptions`).

Device gaps: when the device reports missing samples (block indices jump), the EDF+/BDF+ is
filled with zeros for the missing samples and a "gap" annotation spans them, so the file stays
EDF+C/BDF+C (which MNE and EDFbrowser read) and every later sample and annotation keeps its true
time. The CSV keeps its index column, which shows the jump; the gap is in its events file too.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from config.settings import Settings
from feedback.exercise import Phase, PhaseChanged, RepCompleted
from feedback.outputs.base import BlockDone, Item, OutputFull, Policy, SessionEvent, SessionOpened
from feedback.outputs.edf_writer import EdfPlusWriter, SignalSpec
from feedback.pipeline import Tick
from feedback.processing.metrics import Contraction

log = logging.getLogger(__name__)
# Per 1 s record: room for ~80 events a second; more wait a record. A multiple of 2 and of 3,
# the sample sizes of EDF and BDF.
ANNOTATION_BYTES = 8190
EQUIPMENT = "vm-feedback"  # the EDF+ equipment subfield; replay knows its own records by it
FSYNC_EVERY_S = 1.0
MAX_BACKLOG_BLOCKS = 60_000  # 10 min of 10 ms blocks; a disk that far behind is a fault
END_NOTE = "recording ends (rest of record is padding)"  # devices.formats.edf looks for it
EDF_RANGE_MV = 16.384  # ±, 0.5 µV per step in EDF's 16 bits; beyond it "auto" writes BDF
RAW_RANGE_MV = EDF_RANGE_MV  # the default range (kept for callers)


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """What the EDF+/BDF+ header says beyond the samples: format, range, filters, montage."""

    bdf: bool = False
    range_mv: float = EDF_RANGE_MV
    envelope_prefilter: str = ""  # the chain in force on the envelope channels
    montage: dict[str, Any] | None = None  # feedback.placement.montage

    @classmethod
    def from_settings(
        cls, settings: Settings, montage: dict[str, Any] | None = None
    ) -> RecordOptions:
        rec = settings.recording
        return cls(
            bdf=choose_bdf(rec.format, rec.range_mv),
            range_mv=rec.range_mv,
            envelope_prefilter=prefilter_text(settings),
            montage=montage,
        )


def choose_bdf(fmt: str, range_mv: float) -> bool:
    """BDF when asked for, or ("auto") when EDF's 16 bits at 0.5 µV a step would clip the
    declared input range."""
    return fmt == "bdf" or (fmt == "auto" and range_mv > EDF_RANGE_MV)


def prefilter_text(settings: Settings) -> str:
    """EDF+'s prefilter field for the envelope channels: the chain in force, e.g.
    `HP:20Hz LP:450Hz N:50Hz RMS:100ms`."""
    p = settings.processing
    parts = [f"HP:{p.highpass_hz:g}Hz", f"LP:{p.lowpass_hz:g}Hz"]
    if p.notch_hz:
        parts.append(f"N:{p.notch_hz}Hz")
    if p.envelope == "rms":
        parts.append(f"RMS:{p.rms_window_ms:g}ms")
    else:
        parts.append(f"rectified LP:{p.envelope_lowpass_hz:g}Hz")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Event:
    index: int  # the sample where it begins
    kind: str  # onset | offset | contraction | work | rep | cue | stim | gap
    channel: str
    detail: str
    duration_s: float = 0.0  # 0: an instant


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
    gap_before: int = 0  # samples the device skipped before this chunk


def record_paths(path: Path) -> dict[str, Path]:
    suffix = path.suffix.lower()
    if suffix in (".edf", ".bdf"):
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
                c.onset_index,
                "contraction",
                c.channel,
                f"#{c.number} {c.duration_s:.2f}s peak {_peak(c)} "
                f"hold {_fmt(c.longest_hold_s, 2)}s in band {c.hold_in_band_s:.2f}s "
                f"MDF {_fmt(c.median_freq_hz)}Hz "
                f"VM-VL {_fmt(c.vm_vl_onset_ms)}ms",
                c.duration_s,
            )
        )
    out += [Event(c.index, "cue", "", f"{c.kind} {c.value}") for c in tick.cues]
    return tuple(out)


class _Periods:
    """Work periods and reps as spans: a work period from its cue to the next phase change; a
    rep from its period's work cue to the sample where the hold was reached."""

    def __init__(self, rate_hz: float) -> None:
        self.rate_hz = rate_hz
        self._open: tuple[int, int] | None = None  # (period, start index)
        self._starts: dict[int, int] = {}

    def events(self, tick: Tick) -> list[Event]:
        out: list[Event] = []
        for ev in tick.exercise.events:
            if isinstance(ev, PhaseChanged):
                out += self._close(ev.at_index, "")
                if ev.phase is Phase.WORK:
                    self._open = (ev.rep, ev.at_index)
                    self._starts[ev.rep] = ev.at_index
                    for old in [p for p in self._starts if p < ev.rep - 4]:
                        del self._starts[old]
            elif isinstance(ev, RepCompleted):
                start = self._starts.get(ev.period)
                if start is None:  # no cue seen (recording began mid-period): an instant
                    out.append(Event(ev.at_index, "rep", "", str(ev.rep)))
                else:
                    span = (ev.at_index - start) / self.rate_hz
                    detail = f"{ev.rep} (work cue to hold reached)"
                    out.append(Event(start, "rep", "", detail, span))
        return out

    def _close(self, end: int, note: str) -> list[Event]:
        if self._open is None:
            return []
        period, start = self._open
        self._open = None
        detail = f"period {period}{note}"
        return [Event(start, "work", "", detail, (end - start) / self.rate_hz)]

    def finish(self, end: int) -> list[Event]:
        return self._close(end, " (cut by the end of the recording)")


def stim_event(detail: dict[str, Any], rate_hz: float) -> Event | None:
    """A stimulation burst as a span: from the sample of its decision for ramp up + hold +
    ramp down. None for a message without a sample index."""
    start = detail.get("blank_from")
    if not isinstance(start, int):
        return None
    ms = sum(float(detail.get(k) or 0.0) for k in ("ramp_up_ms", "hold_ms", "ramp_down_ms"))
    text = (
        f"burst {detail.get('burst', '?')} ch {detail.get('channel', '?')} "
        f"{detail.get('amplitude_ma', '?')}mA {detail.get('pulse_width_us', '?')}us "
        f"{detail.get('frequency_hz', '?')}Hz"
    )
    return Event(start, "stim", "", text, ms / 1000.0)


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
        options: RecordOptions | None = None,
        capacity: int = MAX_BACKLOG_BLOCKS,
    ) -> None:
        self.capacity = capacity
        self.refused = 0  # blocks not taken because the backlog was full
        opts = options or RecordOptions()
        suffix = path.suffix.lower()
        if suffix == ".bdf" and not opts.bdf:  # the file name asks for BDF: the more specific
            opts = dataclasses.replace(opts, bdf=True)
        elif suffix == ".edf" and opts.bdf:
            log.warning("recording as BDF+ ([recording] format): %s.bdf, not .edf", path.stem)
            path = path.with_suffix(".bdf")  # readers go by the suffix
        self.options = opts
        self.paths = record_paths(path)
        if suffix not in (".edf", ".bdf", ".csv") and opts.bdf:
            self.paths["edf"] = path.with_name(path.name + ".bdf")
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
        self.gaps = 0
        self.gap_samples = 0
        self.clipped_samples = 0
        self._next_index: int | None = None
        self._periods = _Periods(rate_hz)
        self._notes: list[Event] = []
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
        first = p.block.first_index
        gap = 0 if self._next_index is None else max(0, first - self._next_index)
        events = list(events_of(tick)) + self._periods.events(tick)
        if gap:
            self.gaps += 1
            self.gap_samples += gap
            assert self._next_index is not None
            detail = f"{gap} samples missing from the device (zeros in the EDF/BDF)"
            events.insert(0, Event(self._next_index, "gap", "", detail, gap / self.rate_hz))
        self._next_index = p.block.end_index
        events += self._notes
        self._notes.clear()
        self._queue.append(
            Chunk(
                first,
                p.block.data,
                p.envelope,
                p.pct_mvc,
                tick.onsets.active,
                tick.quality.flags,
                tick.zone,
                tuple(events),
                gap,
            )
        )
        self.max_backlog = max(self.max_backlog, len(self._queue))
        self._wake.set()

    def note(self, kind: str, detail: dict[str, Any]) -> None:
        """A session event (the session's event log): stimulation bursts become spans in the
        record; other kinds carry no sample index and stay in the session log only."""
        if kind == "stim_burst" and (event := stim_event(detail, self.rate_hz)) is not None:
            self._notes.append(event)

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
        tail = list(self._notes)
        if self._next_index is not None:
            tail += self._periods.finish(self._next_index)
        self._notes.clear()
        if tail and self._next_index is not None:
            n = len(self.channels)
            empty = np.zeros((n, 0))
            self._queue.append(
                Chunk(self._next_index, empty, empty, empty, empty, empty, np.zeros(0), tuple(tail))
            )
        await self._drain()
        await asyncio.to_thread(self._close_writers)
        return {
            "paths": {k: str(v) for k, v in self.paths.items()},
            "samples": self.samples_written,
            "events": self.events_written,
            "max_backlog_blocks": self.max_backlog,
            "blocks_refused": self.refused,
            "format": "bdf" if self.options.bdf else "edf",
            "gaps": self.gaps,
            "gap_samples": self.gap_samples,
            "clipped_samples": self.clipped_samples,
            "invalid_samples": sum(
                w.invalid_samples for w in self._writers if isinstance(w, _EdfWriter)
            ),
            "padding_s": sum(w.padding_s for w in self._writers if isinstance(w, _EdfWriter)),
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
        self._events.writerow(["index", "t_s", "kind", "channel", "detail", "duration_s"])
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
            row = [e.index, f"{t_s:.4f}", e.kind, e.channel, e.detail, f"{e.duration_s:.4f}"]
            self._events.writerow(row)
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
    """EDF+ or BDF+ with 1 s data records: per channel raw EMG and envelope (µV), active (0/1)
    and quality flags, plus the target zone; events as annotations with their durations,
    written with the record in which they arrive, so that a crash keeps them (see
    `feedback.outputs.edf_writer`)."""

    def __init__(self, path: Path, rec: Recorder) -> None:
        self.rec = rec
        o = rec.options
        self.range_mv = o.range_mv
        uv = o.range_mv * 1000.0
        montage = o.montage or {}
        trans = {c: _transducer(montage, c) for c in rec.channels}
        signals = [
            SignalSpec(f"EMG {c}"[:16], "uV", -uv, uv, transducer=trans[c]) for c in rec.channels
        ]
        signals += [
            SignalSpec(
                f"EMG {c}"[:12] + " env",
                "uV",
                0.0,
                uv,
                transducer=trans[c],
                prefilter=o.envelope_prefilter,
            )
            for c in rec.channels
        ]
        signals += [SignalSpec(f"{c} active"[:16], "", 0.0, 1.0, 0, 1) for c in rec.channels]
        signals += [SignalSpec(f"{c} quality"[:16], "", 0.0, 15.0, 0, 15) for c in rec.channels]
        signals.append(SignalSpec("zone", "", 0.0, 2.0, 0, 2))
        scheme = str(montage.get("scheme") or "")
        self._w = EdfPlusWriter(
            path,
            signals,
            rate_hz=rec.rate_hz,
            patient_code=rec.patient,  # pseudonymous id only
            equipment=EQUIPMENT,
            # EDF+ header subfields: ASCII, no spaces, 80 characters with the equipment field.
            recording_additional="_".join(
                filter(None, (rec.session_id, f"delay_{rec.group_delay_ms:.1f}ms", scheme))
            ),
            annotation_bytes=ANNOTATION_BYTES,
            bdf=o.bdf,
        )
        self.per_record = self._w.per_record
        self._buf: list[np.ndarray] = []
        self._buffered = 0
        self._rows = 4 * len(rec.channels) + 1
        self._end = 0  # samples in the file, gap fill included
        self.padding_s = 0.0  # after the true end, marked by END_NOTE

    @property
    def invalid_samples(self) -> int:
        return self._w.invalid_samples

    def write(self, chunk: Chunk, origin: int) -> None:
        r = self.range_mv
        if chunk.gap_before:
            self._append(np.zeros((self._rows, chunk.gap_before)))
        raw = np.asarray(chunk.raw, dtype=np.float64)
        self.rec.clipped_samples += int(np.count_nonzero(np.abs(raw) > r))
        rows = np.vstack(
            [
                np.clip(raw, -r, r) * 1000.0,
                np.clip(chunk.envelope, 0.0, r) * 1000.0,
                chunk.active,
                chunk.flags,
                chunk.zone[None, :],
            ]
        ).astype(np.float64)
        if rows.shape[1]:
            self._append(rows)
        for e in chunk.events:
            text = " ".join(filter(None, (e.kind, e.channel, e.detail)))
            onset = (e.index - origin) / self.rec.rate_hz
            span = e.duration_s if math.isfinite(e.duration_s) and e.duration_s > 0 else 0.0
            try:
                self._w.annotate(onset, text[:80], span)
            except ValueError as exc:  # refused by EDF+ alone: the samples go on being written
                log.warning("EDF+: event not annotated: %s", exc)
        while self._buffered >= self.per_record:
            self._flush_record()

    def _append(self, rows: np.ndarray) -> None:
        self._buf.append(rows)
        self._buffered += rows.shape[1]
        self._end += rows.shape[1]

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
            if self._buffered or self._w.annotations_pending:
                # Events that came at the end (a work period cut by it) need a record to ride
                # in: with no samples left over, that is one record of padding.
                end_s = self._end / r.rate_hz
                pad_s = (self.per_record - self._buffered) / r.rate_hz
                self._w.annotate(end_s, END_NOTE, pad_s)
                self.padding_s = pad_s
                if not self._buffered:
                    self._buf, self._buffered = [np.zeros((self._rows, 0))], 0
                self._flush_record(pad=True)
            if self._w.annotations_pending:
                # No record left to carry them; say so where the clinician looks.
                more = self._w.annotations_pending
                log.warning("EDF+: %d events beyond the annotation room; all are in the CSV", more)
        finally:
            self._w.close()


def _transducer(montage: dict[str, Any], channel: str) -> str:
    from feedback.placement import transducer

    entry = (montage.get("electrodes") or {}).get(channel)
    return transducer(entry, str(montage.get("scheme") or "")) if entry else ""


class RecorderOutput:
    """`--record PATH` as an output: the recorder is made when the session opens (its header
    needs the session, the device, the chain's delay and the montage), then takes every block;
    session events go to `note` (stimulation bursts become spans in the record)."""

    name = "recorder"
    policy = Policy.LOSSLESS
    restartable = False  # its open files would not survive a restart

    def __init__(self, path: Path) -> None:
        self.path = path
        self.recorder: Recorder | None = None
        self._opened = asyncio.Event()

    def offer(self, item: Item) -> None:
        rec = self.recorder
        if isinstance(item, BlockDone) and rec is not None:
            rec.put(item.tick)
        elif isinstance(item, SessionEvent) and rec is not None:
            rec.note(item.kind, item.detail)
        elif isinstance(item, SessionOpened):
            self.recorder = Recorder(
                self.path,
                rate_hz=item.device.rate_hz,
                channels=item.device.channels,
                session_id=item.session_id,
                patient=item.settings.session.patient,
                group_delay_ms=item.group_delay_ms,
                options=RecordOptions.from_settings(item.settings, item.montage),
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
