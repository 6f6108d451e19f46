"""Fuzz targets for the parsers added in issue 16 that take bytes or values from outside the
process: the BIDS export's EDF/BDF header reader, BrainFlow's sample rows (the package counter
and the samples), and the station's EDF+/BDF+ writer fed hostile samples and annotations.
Shared by the hypothesis tests (tests/fuzz/test_fuzz_files.py, the short run in the normal
suite) and the atheris harness (tests/fuzz/atheris_files.py, `make fuzz`). Each target takes
bytes and either returns or raises AssertionError (a finding); the parser's typed refusal is an
acceptable outcome, any other exception is a finding too. XDF is fuzzed with the other replay
readers (tests/fuzz/replay_seeds.py)."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import math
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from feedback.clinic.edf_header import NotAnEdfFile, read_header
from feedback.outputs.edf_writer import EdfPlusWriter, SignalSpec

CASES: collections.Counter[str] = collections.Counter()
WORK = Path(tempfile.mkdtemp(prefix="fuzz-files-"))


# -- the EDF/BDF header reader of the BIDS export ------------------------------------------------


def write_edf(
    path: Path,
    signals: list[SignalSpec],
    *,
    rate_hz: int,
    records: int,
    bdf: bool = False,
    samples: np.ndarray | None = None,
    notes: tuple[tuple[float, str, float | None], ...] = (),
) -> EdfPlusWriter:
    """A file written by the station's own writer (the valid input to start from)."""
    w = EdfPlusWriter(
        path,
        signals,
        rate_hz=rate_hz,
        patient_code="P-0001",
        equipment="vm-feedback",
        recording_additional="S1_delay_3.0ms",
        start=dt.datetime(2026, 1, 2, 3, 4, 5),
        annotation_bytes=240,
        fsync=False,
        bdf=bdf,
    )
    for onset, text, duration in notes:
        w.annotate(onset, text, duration)
    for k in range(records):
        block = np.zeros((len(signals), rate_hz)) if samples is None else samples
        w.write_record(block if k == 0 else np.zeros_like(block))
    w.close()
    return w


@cache
def header_seeds() -> tuple[bytes, ...]:
    edf = [SignalSpec("EMG VM", "uV", -16384, 16384), SignalSpec("VM active", "", 0, 1, 0, 1)]
    out = []
    for bdf in (False, True):
        path = WORK / f"seed.{'bdf' if bdf else 'edf'}"
        write_edf(path, edf, rate_hz=20, records=2, bdf=bdf)
        out.append(path.read_bytes())
    return tuple(out)


def check_header(path: Path) -> None:
    """A header whose every number a caller divides by or writes out is usable, or
    NotAnEdfFile naming the file."""
    try:
        h = read_header(path)
    except NotAnEdfFile as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return
    assert h.records >= 0 and math.isfinite(h.record_s) and h.record_s >= 0
    assert math.isfinite(h.duration_s) and h.duration_s >= 0
    for s in h.signals:
        rate = h.rate_hz(s)
        assert math.isfinite(rate) and rate > 0, (s, h.record_s)
        assert math.isfinite(s.lsb) and s.lsb != 0, s
        assert s.digital_min < s.digital_max


def edf_header(data: bytes) -> None:
    """data[0] < 0x80: its low bit picks a valid EDF or BDF header, data[1:3] an offset into it,
    and the rest is laid over the header there (so that inputs land in the fields instead of
    failing the version check); otherwise the bytes are the whole file."""
    CASES["edf_header"] += 1
    path = WORK / "case.edf"
    if len(data) >= 3 and data[0] < 0x80:
        seed = bytearray(header_seeds()[data[0] & 1])
        at = int.from_bytes(data[1:3], "little") % len(seed)
        seed[at : at + len(data) - 3] = data[3:]
        data = bytes(seed)
    path.write_bytes(data)
    check_header(path)


# -- BrainFlow's rows: the package counter and the samples ----------------------------------------

BOARD_SPEC = "brainflow:SYNTHETIC_BOARD?channels=VM,VL"


def brainflow_device() -> Any:
    from devices.brainflow_device import open_brainflow

    return open_brainflow(BOARD_SPEC, "SYNTHETIC_BOARD", {"channels": "VM,VL"}, block_ms=10)


@cache
def board_rows() -> int:
    from devices.brainflow_device import load_brainflow

    return int(load_brainflow().BoardShim.get_num_rows(-1))  # the synthetic board


def check_split(batches: list[np.ndarray]) -> None:
    """Blocks of finite, in-range float32 samples at strictly increasing, non-overlapping
    indices; every sample index is either delivered or counted lost; with a counter that
    steps +1 and good samples, the blocks are the rows, one block per batch."""
    from devices.formats.base import MAX_ABS_VALUE

    dev = brainflow_device()
    blocks = [b for rows in batches for b in dev.split(rows)]
    end = 0
    for b in blocks:
        assert b.n_samples >= 1 and b.data.dtype == np.float32 and b.data.shape[0] == 2
        assert np.isfinite(b.data).all() and (np.abs(b.data) <= MAX_ABS_VALUE).all()
        assert b.first_index >= end, (b.first_index, end)
        end = b.end_index
    delivered = sum(b.n_samples for b in blocks)
    assert dev.stats.samples == delivered <= sum(r.shape[1] for r in batches)
    assert dev._next_index == delivered + dev.stats.samples_lost >= end
    assert dev.stats.samples_lost >= 0 and dev.stats.gaps >= 0
    rows = np.concatenate(batches, axis=1) if batches else np.zeros((board_rows(), 0))
    counter = rows[dev._counter_row]
    emg = rows[dev._rows] * dev._scale
    clean = np.isfinite(counter).all() and (np.abs(emg) <= MAX_ABS_VALUE).all()
    if clean and (np.diff(np.rint(counter)) % 256 == 1).all():
        assert len(blocks) == sum(1 for r in batches if r.shape[1])
        assert dev.stats.samples_lost == 0 and delivered == rows.shape[1]
        got = np.concatenate([b.data for b in blocks], axis=1) if blocks else emg[:, :0]
        assert np.array_equal(got, emg.astype(np.float32))


HOSTILE = (math.nan, math.inf, -math.inf, 1e300, -1.0, 0.5, 255.0, 256.0, -1e300, 3e38)


def brainflow(data: bytes) -> None:
    """data[0]: the batches (1-3) and the mode; then, per sample, a counter step byte and two
    int8 samples (mode 0), or raw float64 rows (mode 1); then hostile values at chosen cells
    (pairs of bytes: where, which value)."""
    CASES["brainflow"] += 1
    if not data:
        return
    dev = brainflow_device()
    nrows = board_rows()
    batches, raw, rest = 1 + data[0] % 3, data[0] & 0x80, data[1:]
    if raw:
        n = len(rest) // (8 * nrows)
        rows = np.frombuffer(rest[: 8 * nrows * n], "<f8").reshape(nrows, n).copy()
    else:
        n = min(len(rest) // 3, 2000)
        cells = np.frombuffer(rest[: 3 * n], np.uint8).reshape(n, 3) if n else np.zeros((0, 3))
        rows = np.zeros((nrows, n))
        steps = np.where(cells[:, 0] < 200, 1, cells[:, 0])  # mostly +1, sometimes a jump
        rows[dev._counter_row] = np.cumsum(steps) % 256
        rows[dev._rows] = cells[:, 1:].astype(np.int8).T.astype(np.float64) * 100
        rows[dev._ts_row] = 1.8e9 + np.arange(n) / 250
        tail = rest[3 * n :]
        for k in range(0, len(tail) - 1, 2):
            if n:
                where = tail[k] % n
                row = (dev._counter_row, *dev._rows, dev._ts_row)[tail[k + 1] % 4]
                rows[row, where] = HOSTILE[tail[k + 1] // 4 % len(HOSTILE)]
    cuts = np.linspace(0, rows.shape[1], batches + 1).astype(int)
    check_split([rows[:, a:b] for a, b in itertools.pairwise(cuts) if b > a])


# -- the station's EDF+/BDF+ writer, fed hostile samples and annotations --------------------------

VALUES = (0.0, 1.0, -1.0, 0.25, 16384.0, -16384.0, 16384.4, 1e9, -1e300, math.nan, math.inf,
          -math.inf, 5e-324, 123.456)  # fmt: skip
NOTE_TIMES = (0.0, 0.5, 1.0, -0.25, 1e-5, 59.9999, 3600.0, 1e7, 1e300, math.nan, math.inf)


def check_writer(
    bdf: bool,
    rate: int,
    samples: np.ndarray,
    notes: list[tuple[float, str, float | None]],
) -> None:
    """The file the writer leaves opens in edflib (pyedflib) and in the BIDS header reader,
    with every record; finite samples come back within a step (clipped to the range), NaN as
    0; every annotation the writer took comes back, and the others were refused with
    ValueError at once."""
    import pyedflib

    signals = [SignalSpec("EMG VM", "uV", -16384.0, 16384.0), SignalSpec("zone", "", 0, 2, 0, 2)]
    path = WORK / f"w.{'bdf' if bdf else 'edf'}"
    w = EdfPlusWriter(path, signals, rate_hz=rate, patient_code="P-1", equipment="vm-feedback",
                      annotation_bytes=240, fsync=False, bdf=bdf)  # fmt: skip
    taken = []
    for onset, text, duration in notes:
        try:
            w.annotate(onset, text, duration)
        except ValueError:
            ok_numbers = abs(onset) < 1e9 and (duration is None or 0 <= duration < 1e9)
            assert not ok_numbers, (onset, text, duration)
        else:
            taken.append((onset, text))
    records = samples.shape[1] // rate
    for k in range(records):
        w.write_record(samples[:, k * rate : (k + 1) * rate])
    w.close()
    header = read_header(path)
    assert header.records == records and [s.label for s in header.signals] == ["EMG VM", "zone"]
    if not records:  # edflib opens no file without a record: nothing was written yet
        return
    with pyedflib.EdfReader(str(path)) as r:
        assert r.datarecords_in_file == records
        got = r.readSignal(0, digital=False)
        onsets, _, texts = r.readAnnotations()
    want = np.clip(np.nan_to_num(samples[0, : records * rate], nan=0.0), -16384.0, 16384.0)
    step = 32768.0 / (8388607.5 if bdf else 32767.5)
    assert np.all(np.abs(got - want) <= step), np.max(np.abs(got - want))
    assert w.invalid_samples == int(np.isnan(samples[:, : records * rate]).sum())
    assert len(texts) == w.annotations_written <= len(taken)
    for onset, (when, _) in zip(onsets, taken, strict=False):
        assert abs(onset - when) <= 1e-4 * max(1.0, abs(when)), (onset, when)


def edf_writer(data: bytes) -> None:
    """data[0]: BDF or EDF and the rate; then samples picked from VALUES (one byte each, first
    record's worth and a second), then annotations (three bytes each: onset, duration, text)."""
    CASES["edf_writer"] += 1
    if len(data) < 2:
        return
    bdf, rate = bool(data[0] & 1), 1 + data[0] % 7
    n = min(len(data) - 1, 2 * rate)
    picks = [VALUES[b % len(VALUES)] for b in data[1 : 1 + n]]
    samples = np.vstack([np.array(picks, dtype=np.float64), np.zeros(n)])
    notes = []
    rest = data[1 + n :]
    for k in range(0, len(rest) - 2, 3):
        onset = NOTE_TIMES[rest[k] % len(NOTE_TIMES)]
        duration = None if rest[k + 1] % 3 == 0 else NOTE_TIMES[rest[k + 1] % len(NOTE_TIMES)]
        text = bytes(rest[k + 2 : k + 2 + rest[k + 2] % 50]).decode("latin-1")
        notes.append((onset, text, duration))
    check_writer(bdf, rate, samples, notes)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "edf_header": edf_header,
    "brainflow": brainflow,
    "edf_writer": edf_writer,
}
