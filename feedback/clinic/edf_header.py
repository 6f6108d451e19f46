"""What the BIDS export needs from an EDF+/BDF+ header: the identity of the recording and its
signals (labels, units, prefilters, rates), read from the file itself.

The header is read by hand rather than through pyedflib: matching recordings to sessions opens
every file of a recordings folder, and 256 bytes per file are all it takes (EDF spec,
https://www.edfplus.info/specs/edf.html; BDF differs only in its first byte and 24-bit samples).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path


class NotAnEdfFile(ValueError):
    """The file is not EDF(+) or BDF(+): a header field is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Signal:
    label: str
    transducer: str
    dimension: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefilter: str
    samples_per_record: int

    @property
    def lsb(self) -> float:
        """One digital step in physical units."""
        return (self.physical_max - self.physical_min) / (self.digital_max - self.digital_min)


@dataclass(frozen=True, slots=True)
class EdfHeader:
    path: Path
    bdf: bool
    patient: str
    recording: str
    start_date: str  # dd.mm.yy
    start_time: str  # hh.mm.ss
    reserved: str  # EDF+C / EDF+D / BDF+C / 24BIT / ...
    records: int
    record_s: float
    signals: tuple[Signal, ...]  # without the "EDF/BDF Annotations" signal

    @property
    def duration_s(self) -> float:
        return self.records * self.record_s

    def rate_hz(self, signal: Signal) -> float:
        return signal.samples_per_record / self.record_s


ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
# The spec's numbers are plain ASCII: Python's int()/float() would also take "1_0", "nan",
# "inf" and "1e999", which no EDF writer means and which end as a division by zero or a NaN
# rate far from here (the BIDS sidecar, the events' onsets).
_INT = re.compile(rb"\s*[+-]?\d+\s*")
_FLOAT = re.compile(rb"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_DIGITAL = {False: (-32768, 32767), True: (-8388608, 8388607)}  # 16-bit EDF, 24-bit BDF


def _int(raw: bytes, what: str) -> int:
    if not _INT.fullmatch(raw):
        raise ValueError(f"{what} {raw.decode('latin-1').strip()!r} is not a whole number")
    return int(raw)


def _float(raw: bytes, what: str) -> float:
    value = float(raw) if _FLOAT.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise ValueError(f"{what} {raw.decode('latin-1').strip()!r} is not a finite number")
    return value


def read_header(path: Path) -> EdfHeader:
    """The header, or NotAnEdfFile when it is malformed or its numbers cannot describe a
    recording (no signals, a rate or a scale that would divide by zero, a negative count)."""
    with path.open("rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise NotAnEdfFile(f"{path}: shorter than an EDF header")
        bdf = fixed[:1] == b"\xff"
        if not bdf and fixed[:8].strip() != b"0":
            raise NotAnEdfFile(f"{path}: neither EDF ('0') nor BDF (0xFF 'BIOSEMI') version field")
        try:
            ns = _int(fixed[252:256], "number of signals")
            records = _int(fixed[236:244], "number of data records")
            record_s = _float(fixed[244:252], "record duration")
        except ValueError as exc:
            raise NotAnEdfFile(f"{path}: bad number in the fixed header ({exc})") from exc
        if ns < 1:
            raise NotAnEdfFile(f"{path}: {ns} signals announced")
        if records < 0:  # -1: a writer (edflib) that never closed the file
            raise NotAnEdfFile(
                f"{path}: {records} data records (an unfinished file: "
                "python -m feedback.outputs.repair fixes it)"
            )
        if record_s < 0 or not math.isfinite(records * record_s):
            raise NotAnEdfFile(f"{path}: {records} records of {record_s} s is no duration")
        rest = f.read(256 * ns)
    if len(rest) < 256 * ns:
        raise NotAnEdfFile(f"{path}: header cut short ({ns} signals announced)")
    widths = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)
    columns: list[list[bytes]] = []
    at = 0
    for w in widths:
        raw = rest[at : at + w * ns]
        columns.append([raw[i * w : (i + 1) * w] for i in range(ns)])
        at += w * ns
    try:
        signals = [
            _signal(columns, i, bdf, record_s)
            for i in range(ns)
            if _text(columns[0][i]) not in ANNOTATION_LABELS
        ]
    except ValueError as exc:
        raise NotAnEdfFile(f"{path}: bad signal header ({exc})") from exc

    def text(a: int, b: int) -> str:
        return _text(fixed[a:b])

    return EdfHeader(
        path=path,
        bdf=bdf,
        patient=text(8, 88),
        recording=text(88, 168),
        start_date=text(168, 176),
        start_time=text(176, 184),
        reserved=text(192, 236),
        records=records,
        record_s=record_s,
        signals=tuple(signals),
    )


def _text(raw: bytes) -> str:
    return raw.decode("latin-1").strip()


def _signal(columns: list[list[bytes]], i: int, bdf: bool, record_s: float) -> Signal:
    label = _text(columns[0][i])
    signal = Signal(
        label=label,
        transducer=_text(columns[1][i]),
        dimension=_text(columns[2][i]),
        physical_min=_float(columns[3][i], f"{label!r} physical minimum"),
        physical_max=_float(columns[4][i], f"{label!r} physical maximum"),
        digital_min=_int(columns[5][i], f"{label!r} digital minimum"),
        digital_max=_int(columns[6][i], f"{label!r} digital maximum"),
        prefilter=_text(columns[7][i]),
        samples_per_record=_int(columns[8][i], f"{label!r} samples per record"),
    )
    low, high = _DIGITAL[bdf]
    if not low <= signal.digital_min < signal.digital_max <= high:
        raise ValueError(
            f"{label!r} digital range {signal.digital_min}..{signal.digital_max} "
            f"(within {low}..{high}, minimum below maximum)"
        )
    if signal.physical_min == signal.physical_max or not math.isfinite(signal.lsb):
        raise ValueError(
            f"{label!r} physical range {signal.physical_min}..{signal.physical_max} gives no scale"
        )
    if signal.samples_per_record < 1 or record_s <= 0:
        raise ValueError(
            f"{label!r}: {signal.samples_per_record} samples per {record_s} s record is no rate"
        )
    return signal
