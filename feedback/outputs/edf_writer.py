"""A small EDF+C / BDF+C writer that keeps the file valid after every data record.

Why not pyedflib's `EdfWriter`: edflib writes "-1" as the number of data records until `close()`
and keeps every annotation in memory until then, so a station killed mid-session (kill -9, power
cut, a crash) left a file that no EDF reader opens and that had lost all its events (issue 11,
defect 6). edflib has no call to update the header as it goes. EDF is simple enough to write by
hand; every file this module writes is read back with pyedflib in the tests.

Crash-safety: each data record (signals + its own "EDF Annotations" bytes) is written with one
`os.write` call, and only then is the record count in the header (bytes 236-243) rewritten. A
kill between the two leaves a count one short of the records in the file, which readers accept
(and `feedback.outputs.repair` tidies). Durability against a power cut: `fsync` after each record
(records are 1 s long), so at most the record in flight is lost.

BDF+ (`bdf=True`) is the same layout with 24-bit little-endian samples, the BioSemi
identification bytes (0xFF "BIOSEMI"), "BDF+C" in the reserved field and a "BDF Annotations"
signal (edflib's and MNE's conventions); it is read back with pyedflib and MNE in the tests.

Annotations go into the record being written when they arrive (EDF+ allows a TAL's onset to lie
in another record), so they survive a crash together with that record. A record holds
`annotation_bytes` of them; what does not fit waits for the next record.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

RECORD_COUNT_OFFSET = 236  # header bytes 236-243: number of data records
# edflib keeps annotation times in 100 ns steps in 64 bits: beyond 9.2e11 s an onset came back
# negative. A session is hours; 1e9 s (31 years) is a wrong number, refused.
MAX_TIME_S = 1e9
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


EDF_DIGITAL = (-32768, 32767)
BDF_DIGITAL = (-8388608, 8388607)


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One signal's header. digital_min/max None: the format's full range (16 or 24 bit)."""

    label: str  # EDF+: "<type> <specification>", e.g. "EMG VM"; at most 16 characters
    dimension: str  # ASCII, e.g. "uV" (EDF has no µ)
    physical_min: float
    physical_max: float
    digital_min: int | None = None
    digital_max: int | None = None
    transducer: str = ""  # e.g. "AgAgCl surface electrode"
    prefilter: str = ""  # e.g. "HP:20Hz LP:450Hz N:50Hz"; empty: none applied/known


def _ascii(text: str, width: int, *, spaces: bool = True) -> bytes:
    clean = _UNPRINTABLE.sub("_", text)
    if not spaces:
        clean = clean.replace(" ", "_")
    return clean[:width].ljust(width).encode("ascii")


def _number(value: float, width: int = 8) -> bytes:
    """An EDF header number: ASCII, at most 8 characters, left-justified, as precise as fits."""
    if float(value).is_integer() and len(str(int(value))) <= width:
        return str(int(value)).ljust(width).encode("ascii")
    for digits in range(width, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= width:
            return text.ljust(width).encode("ascii")
    raise ValueError(f"{value!r} does not fit an EDF header field of {width} characters")


def tal(onset_s: float, text: str = "", duration_s: float | None = None) -> bytes:
    """One Time-stamped Annotation List entry: +onset[\\x15duration]\\x14text\\x14\\x00."""
    onset = f"{onset_s:+.4f}".rstrip("0").rstrip(".")
    if onset in ("+", "-"):
        onset = "+0"
    # abs(): -0.0 printed "-", which made edflib refuse the whole file; "0" where it rounds
    # to nothing (it printed an empty duration).
    span = f"{abs(duration_s or 0.0):.4f}".rstrip("0").rstrip(".") or "0"
    dur = "" if duration_s is None else "\x15" + span
    body = _UNPRINTABLE.sub("_", text)
    return f"{onset}{dur}\x14{body}\x14".encode("ascii") + b"\x00"


class EdfPlusWriter:
    """EDF+C (16-bit) or BDF+C (24-bit), one sample rate for every signal, `record_s` long
    data records."""

    def __init__(
        self,
        path: Path,
        signals: list[SignalSpec],
        *,
        rate_hz: float,
        patient_code: str,
        equipment: str,
        recording_additional: str = "",
        start: dt.datetime | None = None,
        record_s: int = 1,
        annotation_bytes: int = 4096,
        fsync: bool = True,
        bdf: bool = False,
    ) -> None:
        self.bdf = bdf
        self.sample_bytes = 3 if bdf else 2
        full = BDF_DIGITAL if bdf else EDF_DIGITAL
        per_record = rate_hz * record_s
        if abs(per_record - round(per_record)) > 1e-9 or per_record < 1:
            raise ValueError(f"EDF+ records need a whole number of samples; {rate_hz} Hz is not")
        if annotation_bytes % self.sample_bytes:
            raise ValueError(
                f"annotation_bytes must be a multiple of {self.sample_bytes} (the sample size)"
            )
        for spec in signals:
            if len(spec.label) > 16 or len(spec.dimension) > 8:
                raise ValueError(f"label {spec.label!r} or unit {spec.dimension!r} too long")
        signals = [
            SignalSpec(
                s.label,
                s.dimension,
                s.physical_min,
                s.physical_max,
                full[0] if s.digital_min is None else s.digital_min,
                full[1] if s.digital_max is None else s.digital_max,
                s.transducer,
                s.prefilter,
            )
            for s in signals
        ]
        self._full = full
        self.path = path
        self.signals = signals
        self.per_record = round(per_record)
        self.record_s = record_s
        self.annotation_bytes = annotation_bytes
        self.fsync = fsync
        self.records = 0
        self.annotations_written = 0
        self.invalid_samples = 0  # NaN samples, written as 0 (clipped into the range)
        self._pending: deque[bytes] = deque()
        # The scale as a reader computes it from the header: the header holds the numbers as
        # 8 ASCII characters, so the writer scales with what the header says, not with floats
        # the reader never sees (else the round trip could be off by more than one step).
        lo = np.array([float(_number(s.physical_min)) for s in signals])
        hi = np.array([float(_number(s.physical_max)) for s in signals])
        dlo = np.array([s.digital_min for s in signals], dtype=np.float64)
        dhi = np.array([s.digital_max for s in signals], dtype=np.float64)
        self._gain = ((dhi - dlo) / (hi - lo))[:, None]
        self._offset = (dlo - lo * self._gain[:, 0])[:, None]
        self._dlo, self._dhi = dlo[:, None], dhi[:, None]
        start = start or dt.datetime.now()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write_all(self._header(start, patient_code, equipment, recording_additional))
        self._sync()

    # -- header -----------------------------------------------------------------------------
    def _header(self, start: dt.datetime, patient: str, equipment: str, additional: str) -> bytes:
        ns = len(self.signals) + 1  # + "EDF Annotations"
        date = f"{start.day:02d}-{_MONTHS[start.month - 1]}-{start.year:04d}"
        # EDF+ subfields are separated by spaces, so a subfield itself has none.
        patient_field = f"{_ascii(patient, 80, spaces=False).decode().strip() or 'X'} X X X"
        recording = (
            f"Startdate {date} X X {_ascii(equipment, 80, spaces=False).decode().strip()}"
            f" {additional}"
        ).strip()
        fixed = b"".join(
            [
                b"\xffBIOSEMI" if self.bdf else _ascii("0", 8),
                _ascii(patient_field, 80),
                _ascii(recording, 80),
                _ascii(start.strftime("%d.%m.%y"), 8),
                _ascii(start.strftime("%H.%M.%S"), 8),
                _number(256 * (ns + 1)),
                _ascii("BDF+C" if self.bdf else "EDF+C", 44),
                _number(0),  # the record count: rewritten after every record
                _number(self.record_s),
                _number(ns, 4),
            ]
        )
        labels = [s.label for s in self.signals] + [
            "BDF Annotations" if self.bdf else "EDF Annotations"
        ]
        dims = [s.dimension for s in self.signals] + [""]
        pmin = [s.physical_min for s in self.signals] + [-1.0]
        pmax = [s.physical_max for s in self.signals] + [1.0]
        dmin = [int(s.digital_min or 0) for s in self.signals] + [self._full[0]]
        dmax = [int(s.digital_max or 0) for s in self.signals] + [self._full[1]]
        spr = [self.per_record] * len(self.signals) + [self.annotation_bytes // self.sample_bytes]
        columns = [
            b"".join(_ascii(x, 16) for x in labels),
            b"".join(_ascii(s.transducer, 80) for s in self.signals) + _ascii("", 80),
            b"".join(_ascii(x, 8) for x in dims),
            b"".join(_number(x) for x in pmin),
            b"".join(_number(x) for x in pmax),
            b"".join(_number(x) for x in dmin),
            b"".join(_number(x) for x in dmax),
            b"".join(_ascii(s.prefilter, 80) for s in self.signals) + _ascii("", 80),
            b"".join(_number(x) for x in spr),
            b"".join(_ascii("", 32) for _ in labels),
        ]
        header = fixed + b"".join(columns)
        assert len(header) == 256 * (ns + 1)
        return header

    # -- records ----------------------------------------------------------------------------
    def annotate(self, onset_s: float, text: str, duration_s: float | None = None) -> None:
        """Queue an annotation; it is written with the next data record. ValueError for an
        onset or duration that is not a number EDF+ can hold (a NaN duration made the whole
        file unreadable to edflib), and for one too long for `annotation_bytes` (it would
        wait for ever and hold back every annotation after it)."""
        if not abs(onset_s) < MAX_TIME_S or not (
            duration_s is None or 0 <= duration_s < MAX_TIME_S
        ):
            raise ValueError(f"annotation {text[:40]!r}: onset {onset_s}, duration {duration_s}")
        entry = tal(onset_s, text[:200], duration_s)
        if len(entry) > self.annotation_bytes - 32:
            entry = tal(onset_s, text[:40], duration_s)
        if len(entry) > self.annotation_bytes - 16:  # the record's own TAL: "+<s>\x14\x14\x00"
            raise ValueError(f"annotation of {len(entry)} bytes: more than a record holds")
        self._pending.append(entry)

    @property
    def annotations_pending(self) -> int:
        return len(self._pending)

    def write_record(self, physical: npt.NDArray[np.float64]) -> None:
        """One data record: `physical` is (n_signals, per_record) in physical units."""
        if physical.shape != (len(self.signals), self.per_record):
            raise ValueError(
                f"a record is {(len(self.signals), self.per_record)} samples, got {physical.shape}"
            )
        missing = np.isnan(physical)
        if missing.any():  # EDF has no NaN: cast to an integer it was any value at all
            self.invalid_samples += int(np.count_nonzero(missing))
            physical = np.where(missing, 0.0, physical)
        with np.errstate(over="ignore"):  # beyond float64 is beyond the range: clipped
            digital = np.clip(np.rint(physical * self._gain + self._offset), self._dlo, self._dhi)
        body = self._encode(digital) + self._annotation_block()
        self._write_all(body)
        self.records += 1
        # The data first, then the count: a reader never finds a count beyond the data.
        os.pwrite(self._fd, _number(self.records), RECORD_COUNT_OFFSET)
        self._sync()

    def _encode(self, digital: npt.NDArray[np.float64]) -> bytes:
        if not self.bdf:
            return digital.astype("<i2").tobytes()
        # 24-bit little-endian: the low three bytes of each little-endian int32.
        four = digital.astype("<i4").reshape(-1, 1).view(np.uint8).reshape(-1, 4)
        return four[:, :3].tobytes()

    def _annotation_block(self) -> bytes:
        block = bytearray(tal(self.records * self.record_s))  # the record's timekeeping TAL
        while self._pending and len(block) + len(self._pending[0]) <= self.annotation_bytes:
            block += self._pending.popleft()
            self.annotations_written += 1
        return bytes(block.ljust(self.annotation_bytes, b"\x00"))

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _sync(self) -> None:
        if self.fsync:
            os.fsync(self._fd)
