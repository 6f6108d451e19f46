"""EDF/EDF+/BDF/BDF+ via pyedflib (optional dependency, extra `edf`), read a chunk of samples at
a time. A gzipped file is inflated (with the gzip limits) to a temporary file, since edflib opens
files by name only. The station's own records (equipment "vm-feedback") are recognised: their
envelope channels are marked so that replay does not take them for raw EMG."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from devices.formats.base import (
    Annotation,
    Chunk,
    RecordingFormatError,
    RecordingStream,
    base_suffix,
    check_rate,
    checked_chunk,
    mv_factor,
)
from devices.formats.source import byte_chunks

KINDS = {0: "EDF", 1: "EDF+", 2: "BDF", 3: "BDF+"}  # pyedflib FILETYPE_* constants
CHUNK_SAMPLES = 1 << 16
OWN_EQUIPMENT = "vm-feedback"  # feedback.outputs.recorder.EQUIPMENT
END_NOTE = "recording ends"  # the recorder's annotation at the true end of the samples
ENVELOPE_UNIT = "mV envelope"  # not "mV": replay takes only raw EMG by default


def open_edf(p: Path, gzipped: bool, rate_hz: float | None, units: str | None) -> RecordingStream:
    try:
        import pyedflib
    except ImportError as exc:  # optional dependency
        raise ImportError("reading EDF/BDF needs pyedflib: install the 'edf' extra") from exc
    warnings: list[str] = []
    tmp: str | None = None
    src = str(p)
    if gzipped:
        fd, tmp = tempfile.mkstemp(suffix=base_suffix(p) or ".edf")
        try:
            with os.fdopen(fd, "wb") as fh:
                for piece in byte_chunks(p):
                    fh.write(piece)
        except BaseException:
            os.unlink(tmp)
            raise
        src = tmp

    def cleanup() -> None:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)

    try:
        reader = pyedflib.EdfReader(src)
    except OSError as exc:
        cleanup()
        reason = str(exc).replace(src, "").strip(" :") or "unreadable"
        if "Filesize" in reason or "Number of Datarecords" in reason:
            reason += (
                "; if it was cut short or left by a crashed recorder, "
                f"python -m feedback.outputs.repair {p} fixes its header"
            )
        raise RecordingFormatError(p, f"not a readable EDF/BDF file: {reason}") from None
    try:
        return _stream(p, reader, warnings, rate_hz, units, cleanup)
    except BaseException:
        reader.close()
        cleanup()
        raise


@dataclass(frozen=True, slots=True)
class _Header:
    """What edflib tells about the signals, read once, before anything is checked."""

    labels: list[str]
    dims: list[str]
    rates: list[float]
    lengths: list[int]
    onsets: Any
    durations: Any
    texts: Any
    kind: str
    own: bool  # written by the station's recorder

    @classmethod
    def read(cls, reader: Any) -> _Header:
        n = reader.signals_in_file
        labels = [s.strip() for s in reader.getSignalLabels()]
        dims = [reader.getPhysicalDimension(i).strip() for i in range(n)]
        rates = [float(reader.getSampleFrequency(i)) for i in range(n)]
        lengths = [int(x) for x in reader.getNSamples()]
        onsets, durations, texts = reader.readAnnotations()
        kind = KINDS.get(int(reader.filetype), "EDF")
        own = reader.getEquipment().strip() == OWN_EQUIPMENT
        return cls(labels, dims, rates, lengths, onsets, durations, texts, kind, own)


def _emg_factors(p: Path, h: _Header, units: str | None) -> tuple[list[float | None], float]:
    """Per signal its factor to mV (None: not EMG), and the EMG's one sample rate."""
    labels, dims, rates, n = h.labels, h.dims, h.rates, len(h.labels)
    if n == 0:
        raise RecordingFormatError(p, "the EDF file holds no signals")
    if len(set(labels)) != n:
        raise RecordingFormatError(p, f"repeated signal labels: {', '.join(labels)}")
    # EMG = signals in a voltage unit; a signal with no dimension counts as EMG in `units`.
    factors = [mv_factor(d) if d else (mv_factor(units) if units else None) for d in dims]
    emg = [i for i, f in enumerate(factors) if f is not None]
    if not emg:
        listed = ", ".join(f"{lb} [{d or 'no unit'}]" for lb, d in zip(labels, dims, strict=True))
        reason = f"no EMG signal in a voltage unit (V, mV, uV): {listed}"
        if not units:
            reason += "; pass units= for signals without one"
        raise RecordingFormatError(p, reason)
    if len({rates[i] for i in emg}) > 1:
        listed = ", ".join(f"{labels[i]} {rates[i]:g} Hz" for i in emg)
        raise RecordingFormatError(p, f"EMG signals have different sample rates: {listed}")
    return factors, rates[emg[0]]


def _kept(h: _Header, rate: float, warnings: list[str]) -> tuple[list[int], int]:
    """The signals at the EMG rate, and the samples to replay of each."""
    keep: list[int] = []
    for i, r in enumerate(h.rates):
        if r == rate:
            keep.append(i)
        else:
            warnings.append(f"dropped signal {h.labels[i]!r} ({r:g} Hz, not the EMG rate)")
    length = min(h.lengths[i] for i in keep)
    if any(h.lengths[i] != length for i in keep):
        warnings.append(f"signals differ in length; cut to the shortest ({length} samples)")
    ends = [o for o, t in zip(h.onsets, h.texts, strict=True) if str(t).startswith(END_NOTE)]
    if h.own and ends:  # the recorder padded its last record: replay up to the true end
        length = min(length, round(float(ends[-1]) * rate))
    return keep, length


def _stream(
    p: Path,
    reader: Any,
    warnings: list[str],
    rate_hz: float | None,
    units: str | None,
    cleanup: Any,
) -> RecordingStream:
    h = _Header.read(reader)
    labels, dims, own = h.labels, h.dims, h.own
    factors, rate = _emg_factors(p, h, units)
    check_rate(p, rate, rate_hz, "the EDF header")
    keep, length = _kept(h, rate, warnings)
    scale = np.array([factors[i] or 1.0 for i in keep])[:, None]
    # The station's own records label EMG "EMG VM" (EDF+: signal type, then the name); replay
    # wants the channel role back.
    names = [labels[i].removeprefix("EMG ") if own else labels[i] for i in keep]

    def unit(i: int) -> str:
        if factors[i] is None:
            return str(dims[i])
        return ENVELOPE_UNIT if own and labels[i].endswith(" env") else "mV"

    def chunks() -> Generator[Chunk]:
        try:
            for start in range(0, length, CHUNK_SAMPLES):
                k = min(CHUNK_SAMPLES, length - start)
                values = np.stack([reader.readSignal(i, start, k) for i in keep]) * scale
                yield checked_chunk(p, values, names, _sample_at(values, start))
        finally:
            close()

    closed: list[bool] = []

    def close() -> None:
        if not closed:
            closed.append(True)
            reader.close()
            cleanup()

    annotations = tuple(
        Annotation(float(o), max(float(d), 0.0), str(t))  # edflib gives -1 for "no duration"
        for o, d, t in zip(h.onsets, h.durations, h.texts, strict=True)
    )
    out = chunks()
    return RecordingStream(
        rate_hz=rate,
        channels=tuple(names),
        units=tuple(unit(i) for i in keep),
        t0_s=0.0,
        annotations=annotations,
        source=f"{p} ({h.kind}{', vm-feedback record' if own else ''})",
        warnings=warnings,
        chunks=out,
        close=close,
    )


def _sample_at(
    values: npt.NDArray[np.float64], start: int
) -> Callable[[int, int], tuple[str, int | None]]:
    return lambda c, s: (f"{values[c, s]:g} at sample {start + s}", None)
