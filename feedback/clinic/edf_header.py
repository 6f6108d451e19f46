"""What the BIDS export needs from an EDF+/BDF+ header: the identity of the recording and its
signals (labels, units, prefilters, rates), read from the file itself.

The header is read by hand rather than through pyedflib: matching recordings to sessions opens
every file of a recordings folder, and 256 bytes per file are all it takes (EDF spec,
https://www.edfplus.info/specs/edf.html; BDF differs only in its first byte and 24-bit samples).
"""

from __future__ import annotations

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


def read_header(path: Path) -> EdfHeader:
    with path.open("rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise NotAnEdfFile(f"{path}: shorter than an EDF header")
        bdf = fixed[:1] == b"\xff"
        if not bdf and fixed[:8].strip() != b"0":
            raise NotAnEdfFile(f"{path}: neither EDF ('0') nor BDF (0xFF 'BIOSEMI') version field")
        try:
            ns = int(fixed[252:256])
            records = int(fixed[236:244])
            record_s = float(fixed[244:252])
        except ValueError as exc:
            raise NotAnEdfFile(f"{path}: bad number in the fixed header ({exc})") from exc
        rest = f.read(256 * ns)
    if len(rest) < 256 * ns:
        raise NotAnEdfFile(f"{path}: header cut short ({ns} signals announced)")
    widths = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)
    columns: list[list[str]] = []
    at = 0
    for w in widths:
        raw = rest[at : at + w * ns]
        columns.append([raw[i * w : (i + 1) * w].decode("latin-1").strip() for i in range(ns)])
        at += w * ns
    signals = []
    try:
        for i in range(ns):
            label = columns[0][i]
            if label in ANNOTATION_LABELS:
                continue
            signals.append(
                Signal(
                    label=label,
                    transducer=columns[1][i],
                    dimension=columns[2][i],
                    physical_min=float(columns[3][i]),
                    physical_max=float(columns[4][i]),
                    digital_min=int(columns[5][i]),
                    digital_max=int(columns[6][i]),
                    prefilter=columns[7][i],
                    samples_per_record=int(columns[8][i]),
                )
            )
    except ValueError as exc:
        raise NotAnEdfFile(f"{path}: bad number in a signal header ({exc})") from exc

    def text(a: int, b: int) -> str:
        return fixed[a:b].decode("latin-1").strip()

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
