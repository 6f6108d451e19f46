"""Readers for recorded surface-EMG files, for the replay device: one module per format and
this dispatcher, which picks the format by content (`.gz` is inflated transparently).

``uci``    UCI "EMG dataset in Lower Limb" text export (`devices.formats.uci`).
``santuz`` musclesyneRgies walking CSV (`devices.formats.santuz`).
``csv``    any CSV/TSV with a header row, and the station's own `--record` CSV
           (`devices.formats.generic_csv`).
``edf``    EDF/EDF+/BDF/BDF+, the station's own `--record` EDF+ included (`devices.formats.edf`).
``xdf``    XDF as LabRecorder writes it, one stream chosen by name or type (`devices.formats.xdf`).

`open_recording` streams (header now, samples in bounded chunks); `load_recording` reads the
whole file into a `Recording`. Real files are messy (see ``shared/data/*/README.md``,
"Oddities"): each oddity that is tolerated is written to the warnings; anything that would
silently corrupt the timeline (a gap, a bad or out-of-range number, a time jump, an overlong
line, a gzip bomb) raises `RecordingFormatError` naming the file, the 1-based line and why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

from devices.formats.base import (
    Annotation,
    Recording,
    RecordingFormatError,
    RecordingStream,
    base_suffix,
    mv_factor,
    resolve_channels,
)
from devices.formats.edf import open_edf
from devices.formats.generic_csv import open_csv
from devices.formats.santuz import is_santuz_header, open_santuz
from devices.formats.source import TextLines
from devices.formats.uci import is_uci_first_line, open_uci
from devices.formats.xdf import MAGIC as XDF_MAGIC
from devices.formats.xdf import open_xdf

__all__ = [
    "FORMATS",
    "Annotation",
    "Recording",
    "RecordingFormatError",
    "RecordingStream",
    "load_recording",
    "open_recording",
    "select_channels",
]

FORMATS = ("uci", "santuz", "csv", "edf", "xdf")
_EDF_MAGIC = (b"0       ", b"\xffBIOSEMI")


def open_recording(
    path: str | Path,
    *,
    fmt: str | None = None,
    rate_hz: float | None = None,
    units: str | None = None,
    stream: tuple[str, str] | None = None,
) -> RecordingStream:
    """Open a recording for reading in chunks. `fmt` forces a format (see FORMATS); `rate_hz` is
    needed for a CSV without time column and otherwise must agree with the file; `units` gives
    the EMG unit where the file does not ("mV" default for CSV, "uV" for santuz and XDF; EDF
    signals without a physical dimension). `stream` chooses the stream of an XDF file:
    ("name", NAME) or ("type", TYPE). Raises RecordingFormatError for unusable content (also
    while iterating), ValueError for bad arguments, OSError if the file cannot be opened."""
    p = Path(path)
    fmt = _checked_args(fmt, rate_hz, units)
    warnings: list[str] = []
    text = TextLines(p, warnings)
    if not text.head.strip():
        raise _empty(p, text)
    ext = base_suffix(p)
    if fmt == "xdf" or (fmt is None and text.head.startswith(XDF_MAGIC)):
        text.close()  # pyxdf reads the file itself
        return open_xdf(p, text.gzipped, rate_hz, units, stream)
    if stream is not None:
        raise RecordingFormatError(p, "stream= and type= choose a stream of an XDF file only")
    if fmt == "edf" or (fmt is None and text.head.startswith(_EDF_MAGIC)):
        text.close()  # edflib opens the file itself
        return open_edf(p, text.gzipped, rate_hz, units)
    if fmt is None and ext in (".xdf", ".xdfz"):
        raise RecordingFormatError(p, f"named {ext} but does not start with {XDF_MAGIC!r}", 1)
    if fmt is None and ext in (".edf", ".bdf"):
        raise RecordingFormatError(p, f"named {ext} but does not start with an EDF/BDF header", 1)
    first, all_lines = _from_first_text(p, text)
    opener = _TEXT_OPENERS[fmt or _text_format(first)]
    return opener(p, all_lines, warnings, rate_hz, units)


def _checked_args(fmt: str | None, rate_hz: float | None, units: str | None) -> str | None:
    """`fmt` in its canonical spelling; ValueError for any argument out of its range."""
    if fmt is not None:
        fmt = {"bdf": "edf", "generic": "csv"}.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise ValueError(f"unknown fmt {fmt!r}; use one of {', '.join(FORMATS)}")
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    if units is not None and mv_factor(units) is None:
        raise ValueError(f"unknown units {units!r}; use V, mV, uV or nV")
    return fmt


def _empty(p: Path, text: TextLines) -> RecordingFormatError:
    after = " (after gunzip)" if text.gzipped else ""
    return RecordingFormatError(p, "the file is empty" + after)


def _from_first_text(p: Path, text: TextLines) -> tuple[str, Iterator[tuple[int, str]]]:
    """The first line with text, and all lines again (the blank ones before it included)."""
    lines = iter(text)
    blanks: list[tuple[int, str]] = []
    for n, ln in lines:
        if ln.strip():
            return ln, itertools.chain(blanks, [(n, ln)], lines)
        blanks.append((n, ln))  # few: a file of only blank lines is caught by head.strip()
        if len(blanks) > 10_000:
            raise RecordingFormatError(p, "more than 10000 blank lines before any text", n)
    raise _empty(p, text)


def _text_format(first: str) -> str:
    """A text file's format, told by its first line with text."""
    if is_uci_first_line(first):
        return "uci"
    if is_santuz_header(first):
        return "santuz"
    return "csv"


_TEXT_OPENERS = {"uci": open_uci, "santuz": open_santuz, "csv": open_csv}


def load_recording(
    path: str | Path,
    *,
    fmt: str | None = None,
    rate_hz: float | None = None,
    units: str | None = None,
    stream: tuple[str, str] | None = None,
) -> Recording:
    """Read a whole recording (see `open_recording` for the arguments and errors)."""
    return open_recording(path, fmt=fmt, rate_hz=rate_hz, units=units, stream=stream).read_all()


def select_channels(rec: Recording, mapping: Mapping[str, str]) -> Recording:
    """Keep and rename channels: `mapping` is role -> source channel name, e.g.
    {"VM": "VM", "VL": "EMG VL"}. The result's channels are the roles, in mapping order.
    Exact names win; otherwise a unique case-insensitive match is accepted."""
    index = resolve_channels(rec.source, rec.channels, mapping)
    return Recording(
        rate_hz=rec.rate_hz,
        channels=tuple(mapping),
        units=tuple(rec.units[i] for i in index),
        data=rec.data[index],  # fancy indexing copies, so the new array is its own
        t0_s=rec.t0_s,
        annotations=rec.annotations,
        source=rec.source,
        warnings=rec.warnings,
    )
