"""Round trip of the EDF+/BDF+ record: record ticks → file → read back with pyedflib and MNE →
the same samples within one step of the file's resolution (LSB) and the same annotations
(onset, duration, text). Used by `python -m bench.record_roundtrip` and tests/feedback.

The expected values are taken independently of the EDF writer: samples from the ticks handed
to the recorder (in µV, clipped to the declared range, zeros for a device gap), annotations
from the recorder's CSV events file (a different writer fed with the same events).
"""

from __future__ import annotations

import asyncio
import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from config.settings import Settings
from devices.base import SampleBlock
from feedback.outputs.recorder import END_NOTE, Recorder, RecordOptions
from feedback.pipeline import Pipeline, Tick
from feedback.placement import montage

ONSET_TOL_S = 0.6e-4  # TAL onsets and durations are written to 0.1 ms
Annotation = tuple[float, float, str]


@dataclass(slots=True)
class Expected:
    rate_hz: float
    labels: list[str]
    samples: npt.NDArray[np.float64]  # (signals, n): physical values as recorded
    annotations: list[Annotation]
    path: Path
    write_s: float = 0.0  # time spent in put + close (the writer thread included)


@dataclass(slots=True)
class ReaderResult:
    reader: str
    max_lsb_error: float
    worst_signal: str
    samples_compared: int
    annotations_expected: int
    annotations_read: int
    annotations_equal: bool
    missing: list[Annotation] = field(default_factory=list)
    unexpected: list[Annotation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.max_lsb_error <= 1.0 and self.annotations_equal

    def as_dict(self) -> dict[str, Any]:
        return {
            "reader": self.reader,
            "max_lsb_error": round(self.max_lsb_error, 4),
            "worst_signal": self.worst_signal,
            "samples_compared": self.samples_compared,
            "annotations_expected": self.annotations_expected,
            "annotations_read": self.annotations_read,
            "annotations_equal": self.annotations_equal,
            "missing": self.missing[:5],
            "unexpected": self.unexpected[:5],
            "ok": self.ok,
        }


def ticks_of(
    blocks: Iterable[SampleBlock], settings: Settings, drop: frozenset[int] = frozenset()
) -> list[Tick]:
    """Process blocks as a session does; blocks at the positions in `drop` are left out, as a
    device gap (their samples never arrive)."""
    out: list[Tick] = []
    pipeline: Pipeline | None = None
    for k, block in enumerate(blocks):
        if k in drop:
            continue
        if pipeline is None:
            pipeline = Pipeline(settings, block.rate_hz, block.channels)
        out.append(pipeline.process(block))
    return out


def record(
    ticks: list[Tick],
    path: Path,
    settings: Settings,
    *,
    stim: Iterable[dict[str, Any]] = (),
    csv_too: bool = True,
) -> Expected:
    """Record `ticks` (and stimulation bursts, as the session's event log hands them over)
    with the station's recorder; the expected file content beside it."""
    import time

    first = ticks[0].processed.block
    channels, rate = first.channels, first.rate_hz
    options = RecordOptions.from_settings(
        settings, montage(settings.placement, channels, settings.session.side)
    )
    base = path.with_suffix("") if csv_too else path
    rec = Recorder(
        base if csv_too else path,
        rate_hz=rate,
        channels=channels,
        session_id="S-roundtrip",
        patient="P-0001",
        group_delay_ms=0.0,
        options=options,
    )
    bursts = list(stim)
    started = time.perf_counter()
    for tick in ticks:
        block = tick.processed.block
        for b in [b for b in bursts if block.first_index <= b["blank_from"] < block.end_index]:
            rec.note("stim_burst", b)
        rec.put(tick)
    summary = asyncio.run(rec.close())
    write_s = time.perf_counter() - started
    edf_path = rec.paths["edf"]
    r = options.range_mv
    parts: list[npt.NDArray[np.float64]] = []
    end = first.first_index
    for tick in ticks:
        p = tick.processed
        assert tick.onsets is not None and tick.quality is not None
        if p.block.first_index > end:
            parts.append(np.zeros((4 * len(channels) + 1, p.block.first_index - end)))
        parts.append(
            np.vstack(
                [
                    np.clip(p.block.data.astype(np.float64), -r, r) * 1000.0,
                    np.clip(p.envelope, 0.0, r) * 1000.0,
                    tick.onsets.active,
                    tick.quality.flags,
                    tick.zone[None, :],
                ]
            )
        )
        end = p.block.end_index
    samples = np.concatenate(parts, axis=1)
    labels = [f"EMG {c}" for c in channels] + [f"EMG {c} env" for c in channels]
    labels += [f"{c} active" for c in channels] + [f"{c} quality" for c in channels] + ["zone"]
    annotations = _csv_annotations(rec.paths["csv"]) if "csv" in rec.paths else []
    n, per = samples.shape[1], round(rate)
    if n % per or summary["padding_s"]:  # a whole padded record carries events from the end
        annotations.append((n / rate, (per - n % per) / rate, END_NOTE))
    return Expected(rate, labels, samples, sorted(annotations), edf_path, write_s)


def _csv_annotations(path: Path) -> list[Annotation]:
    events = path.with_name(path.name.removesuffix(".csv") + ".events.csv")
    with events.open(newline="") as f:
        return [
            (
                float(row["t_s"]),
                float(row["duration_s"]),
                " ".join(filter(None, (row["kind"], row["channel"], row["detail"])))[:80],
            )
            for row in csv.DictReader(f)
        ]


def _compare_annotations(
    expected: list[Annotation], got: list[Annotation]
) -> tuple[bool, list[Annotation], list[Annotation]]:
    left = sorted(got)
    missing: list[Annotation] = []
    for e in expected:
        hit = next(
            (
                g
                for g in left
                if g[2] == e[2]
                and abs(g[0] - e[0]) <= ONSET_TOL_S
                and abs(g[1] - e[1]) <= ONSET_TOL_S
            ),
            None,
        )
        if hit is None:
            missing.append(e)
        else:
            left.remove(hit)
    return not missing and not left, missing, left


def _lsb_error(
    expected: Expected, read: dict[str, npt.NDArray[np.float64]], lsb: dict[str, float]
) -> tuple[float, str, int]:
    worst, name, count = 0.0, "", 0
    n = expected.samples.shape[1]
    for i, label in enumerate(expected.labels):
        got = read[label][:n]
        if got.shape[0] < n:
            return math.inf, f"{label} (short: {got.shape[0]} of {n})", count
        err = float(np.max(np.abs(got - expected.samples[i]))) / lsb[label] if n else 0.0
        count += n
        if err > worst or not name:
            worst, name = err, label
    return worst, name, count


def _step(f: Any, i: int) -> float:
    """One digital step of signal i in physical units, from the file's header."""
    span = float(f.getPhysicalMaximum(i)) - float(f.getPhysicalMinimum(i))
    return span / (int(f.getDigitalMaximum(i)) - int(f.getDigitalMinimum(i)))


def check_pyedflib(expected: Expected) -> ReaderResult:
    import pyedflib

    with pyedflib.EdfReader(str(expected.path)) as f:
        labels = [s.strip() for s in f.getSignalLabels()]
        read = {lb: f.readSignal(i) for i, lb in enumerate(labels)}
        lsb = {lb: _step(f, i) for i, lb in enumerate(labels)}
        onsets, durations, texts = f.readAnnotations()
    got = [(float(o), float(d), str(t)) for o, d, t in zip(onsets, durations, texts, strict=True)]
    return _result("pyedflib", expected, read, lsb, got)


def check_mne(expected: Expected) -> ReaderResult:
    import mne  # type: ignore[import-untyped]
    import pyedflib

    with pyedflib.EdfReader(str(expected.path)) as f:  # the header's own step per signal
        lsb = {f.getLabel(i).strip(): _step(f, i) for i in range(f.signals_in_file)}
        dims = {f.getLabel(i).strip(): f.getPhysicalDimension(i) for i in range(f.signals_in_file)}
    reader = mne.io.read_raw_bdf if expected.path.suffix == ".bdf" else mne.io.read_raw_edf
    raw = reader(str(expected.path), preload=True, verbose="error")
    data = raw.get_data()
    read: dict[str, npt.NDArray[np.float64]] = {}
    for i, name in enumerate(raw.ch_names):
        # MNE gives volts for signals in "uV" (its multiplier 1e-6): back to µV; a signal with
        # no dimension it leaves as written.
        read[name] = data[i] * (1e6 if dims.get(name) == "uV" else 1.0)
    got = [
        (float(a["onset"]), float(a["duration"]), str(a["description"])) for a in raw.annotations
    ]
    return _result("mne", expected, read, lsb, got)


def _result(
    name: str,
    expected: Expected,
    read: dict[str, npt.NDArray[np.float64]],
    lsb: dict[str, float],
    got: list[Annotation],
) -> ReaderResult:
    missing_labels = [lb for lb in expected.labels if lb not in read]
    if missing_labels:
        err, worst, count = math.inf, f"missing signals {missing_labels}", 0
    else:
        err, worst, count = _lsb_error(expected, read, lsb)
    equal, missing, unexpected = _compare_annotations(expected.annotations, got)
    return ReaderResult(
        name, err, worst, count, len(expected.annotations), len(got), equal, missing, unexpected
    )
