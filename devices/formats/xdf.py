"""XDF (LabRecorder's format) via pyxdf (optional dependency, extra `research`).

An XDF file holds several LSL streams; one numeric, regular-rate stream is replayed, chosen by
name (`stream=`) or content type (`type=`), or the only one there is. Channel names and units
come from the stream description (`desc/channels/channel/label`, `unit`) as LabRecorder stores
it; a channel without a unit is EMG in `units` (µV when not given, as EMG publishers send).
String streams in the file (markers) become the recording's annotations, on the same
clock-synchronised time base as `t0_s`. pyxdf reads the whole file at once, so memory grows
with the file (unlike the text and EDF readers); timestamps are clock-synchronised but not
dejittered, so a real break in the recording shows and is named in the warnings (replay plays
the samples back to back: XDF has no sample counter to say how many were lost).
"""

from __future__ import annotations

import io
import math
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devices.formats.base import (
    Annotation,
    Chunk,
    RecordingFormatError,
    RecordingStream,
    check_rate,
    checked_chunk,
    mv_factor,
)
from devices.formats.source import byte_chunks

MAGIC = b"XDF:"
CHUNK_SAMPLES = 1 << 16
_SAMPLE_BYTES = {"string": 2, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4}
_SPELLED = {"microvolts": "uV", "millivolts": "mV", "volts": "V", "nanovolts": "nV"}


def unit_factor(unit: str) -> float | None:
    """mV per unit for LSL's spelled-out units (`microvolts`) and the short ones (`uV`)."""
    return mv_factor(_SPELLED.get(unit.strip().lower(), unit))


def open_xdf(
    p: Path,
    gzipped: bool,
    rate_hz: float | None,
    units: str | None,
    stream: tuple[str, str] | None,
) -> RecordingStream:
    try:
        import pyxdf  # type: ignore[import-untyped]
    except ImportError as exc:  # optional dependency
        raise ImportError("reading XDF needs pyxdf: install the 'research' extra") from exc
    # gzip inflated with the gzip limits of every reader (devices.formats.source)
    _guard_sample_counts(pyxdf)
    source: Any = io.BytesIO(b"".join(byte_chunks(p))) if gzipped else str(p)
    try:
        streams, _ = pyxdf.load_xdf(source, dejitter_timestamps=False, verbose=False)
    except Exception as exc:  # pyxdf raises bare Exceptions and struct/XML errors alike
        raise RecordingFormatError(p, f"not a readable XDF file: {exc}") from None
    chosen = _choose(p, streams, stream)
    return _stream(p, chosen, streams, rate_hz, units)


def _guard_sample_counts(pyxdf: Any) -> None:
    """pyxdf sizes a samples chunk's arrays from the counts in the file (samples in the chunk,
    channels of its stream) before reading a byte of them: a 1.4 kB file claiming 10^8 string
    samples kept it busy for 33 s and gigabytes. Before each chunk is read, the claim is checked
    against the bytes left in the file (a sample takes at least its timestamp flag and its
    values); a false one raises inside pyxdf's reader, which treats it as any corrupt chunk
    (skipped, the file read on). Memory stays proportional to the file."""
    module = pyxdf.pyxdf
    read = module._read_chunk3  # a private function: the tests fail if pyxdf renames it
    if getattr(read, "vmf_guarded", False):
        return

    def guarded(f: Any, s: Any) -> Any:
        at = f.tell()
        left = f.seek(0, io.SEEK_END) - at
        f.seek(at)
        count = module._read_varlen_int(f)
        f.seek(at)
        per_value = _SAMPLE_BYTES.get(s.fmt, 8)
        if s.nchns * per_value > left or count * (1 + s.nchns * per_value) > left:
            claim = f"{count} samples of {s.nchns} channels"
            raise ValueError(f"a chunk claims {claim} in the {left} bytes left")
        return read(f, s)

    guarded.vmf_guarded = True  # type: ignore[attr-defined]
    module._read_chunk3 = guarded


def _describe(s: dict[str, Any]) -> str:
    i = s["info"]
    return f"{i['name'][0]!r} (type {i['type'][0]!r}, {i['channel_format'][0]}, {_rate(s):g} Hz)"


def _rate(s: dict[str, Any]) -> float:
    """The nominal rate; NaN where the header gives no number."""
    try:
        return float(s["info"]["nominal_srate"][0])
    except (TypeError, ValueError):
        return math.nan


def _numeric(s: dict[str, Any]) -> bool:
    rate = _rate(s)  # inf too is no regular rate: it ended in a raw ValueError further on
    return s["info"]["channel_format"][0] != "string" and rate > 0 and math.isfinite(rate)


def _choose(
    p: Path, streams: Sequence[dict[str, Any]], stream: tuple[str, str] | None
) -> dict[str, Any]:
    listed = "; ".join(_describe(s) for s in streams) or "none"
    if stream is None:
        found = [s for s in streams if _numeric(s)]
        if len(found) != 1:
            raise RecordingFormatError(
                p,
                f"{len(found)} numeric streams; choose one with ?stream=NAME or ?type=TYPE. "
                f"Streams: {listed}",
            )
        return found[0]
    key, value = stream
    found = [s for s in streams if s["info"][key][0].casefold() == value.casefold()]
    if len(found) != 1:
        what = "no stream" if not found else f"{len(found)} streams"
        raise RecordingFormatError(p, f"{what} with {key} {value!r}. Streams: {listed}")
    if not _numeric(found[0]):
        raise RecordingFormatError(
            p, f"stream {_describe(found[0])} is not numeric samples at a regular rate"
        )
    return found[0]


def _channels(s: dict[str, Any], n: int) -> tuple[list[str], list[str]]:
    """Labels and units of the n channels from the description; `ch1`, `ch2`... and "" where
    it says nothing."""
    labels, units = [f"ch{k + 1}" for k in range(n)], [""] * n
    desc = (s["info"].get("desc") or [None])[0]
    try:
        entries = desc["channels"][0]["channel"] if desc else []
    except (KeyError, IndexError, TypeError):
        entries = []
    for k, ch in enumerate(entries[:n]):
        label = ((ch or {}).get("label") or [""])[0] or ""
        unit = ((ch or {}).get("unit") or [""])[0] or ""
        labels[k] = label.strip() or labels[k]
        units[k] = unit.strip()
    return labels, units


def _stream(
    p: Path,
    s: dict[str, Any],
    streams: Sequence[dict[str, Any]],
    rate_hz: float | None,
    units: str | None,
) -> RecordingStream:
    warnings: list[str] = []
    info = s["info"]
    rate = _rate(s)
    check_rate(p, rate, rate_hz, f"stream {info['name'][0]!r}")
    data = np.asarray(s["time_series"])
    stamps = np.asarray(s["time_stamps"], dtype=np.float64)
    if data.ndim != 2 or data.shape[0] == 0:  # before the labels: channel_count may be 10^9
        raise RecordingFormatError(p, f"stream {_describe(s)} holds no samples")
    if data.shape[1] == 0:
        raise RecordingFormatError(p, f"stream {_describe(s)} has no channels")
    labels, unit_names = _channels(s, data.shape[1])
    if len(set(labels)) != len(labels):
        raise RecordingFormatError(p, f"repeated channel labels: {', '.join(labels)}")
    default = units or "uV"
    if not units and "" in unit_names:
        warnings.append("channels without a unit taken as µV (give unit= if they are not)")
    factors = [unit_factor(u or default) for u in unit_names]
    _note_breaks(stamps, rate, warnings)
    emg = [k for k, f in enumerate(factors) if f is not None]
    scale = np.array([factors[k] or 1.0 for k in range(len(labels))])[:, None]
    rows = data.T  # (channels, samples)

    def chunks() -> Generator[Chunk]:
        for start in range(0, rows.shape[1], CHUNK_SAMPLES):
            part = rows[:, start : start + CHUNK_SAMPLES]
            values = part.astype(np.float64) * scale
            yield checked_chunk(p, values, labels, _at(values, start))

    markers = [
        Annotation(float(t), 0.0, str(v[0]) if len(v) else "")  # a 0-channel marker stream
        for other in streams
        if other["info"]["channel_format"][0] == "string"
        for v, t in zip(other["time_series"], other["time_stamps"], strict=False)
    ]
    return RecordingStream(
        rate_hz=rate,
        channels=tuple(labels),
        units=tuple("mV" if k in emg else unit_names[k] for k in range(len(labels))),
        t0_s=float(stamps[0]),
        annotations=tuple(sorted(markers)),
        source=f"{p} (XDF stream {info['name'][0]!r})",
        warnings=warnings,
        chunks=chunks(),
    )


def _note_breaks(stamps: np.ndarray, rate: float, warnings: list[str]) -> None:
    if stamps.shape[0] < 2:
        return
    step = np.diff(stamps)
    jumps = np.flatnonzero(np.abs(step - 1.0 / rate) > max(3.0 / rate, 0.025))
    if jumps.size:
        worst = int(jumps[np.argmax(np.abs(step[jumps]))])
        warnings.append(
            f"timestamps break {jumps.size} time(s) (largest {step[worst]:+.3f} s after sample "
            f"{worst}): replayed back to back"
        )


def _at(values: np.ndarray, start: int) -> Any:
    return lambda c, s: (f"{values[c, s]:g} at sample {start + s}", None)
