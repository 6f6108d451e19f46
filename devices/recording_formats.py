"""Readers for recorded surface-EMG files, for the replay device.

Pure file parsing: no asyncio, no filtering. Every reader returns a `Recording` whose EMG channels
are float32 millivolts, so that replayed data and live data share one scale. Real files are messy
(see ``shared/data/*/README.md``, "Oddities"): each oddity that is tolerated is written to
`Recording.warnings`; anything that would silently corrupt the timeline (a gap, a bad number, a
time jump) raises `RecordingFormatError` naming the file, the 1-based line and the reason.

Formats (auto-detected by content; ``.gz`` is decompressed transparently):
``uci``    UCI "EMG dataset in Lower Limb" text export (Biometrics DataLOG), 1000 Hz,
           RF/BF/VM/ST in mV + knee angle FX in deg.
``santuz`` musclesyneRgies walking CSV (``time,ME,MA,...``), EMG assumed µV, gait events from
           the sibling ``*_cycles.csv``.
``csv``    any CSV/TSV with a header row; optional time column, else ``rate_hz`` is required.
``edf``    EDF/EDF+/BDF/BDF+ via pyedflib (optional dependency, extra ``edf``).
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "FORMATS",
    "Annotation",
    "Recording",
    "RecordingFormatError",
    "load_recording",
    "select_channels",
]

FORMATS = ("uci", "santuz", "csv", "edf")

# Multiplier that takes a value in the given unit to millivolts. Keys are lower-cased with the
# micro sign folded to "u", because EDF headers and CSV exports spell µV every possible way.
_TO_MV = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "nv": 1e-6}
_TIME_COLUMNS = ("time", "t", "time_s", "timestamp")
_UCI_RATE_HZ = 1000.0  # documented by the dataset (docs/BDSEMG_eng.txt), not stated in the files
_UCI_NAMES = {  # variant A short names, variant B Spanish names (two spellings each)
    "rf": "RF", "recto femoral": "RF",
    "bf": "BF", "biceps femoral": "BF",
    "vm": "VM", "vasto medial": "VM",
    "st": "ST", "semitendinoso": "ST", "emg semitendinoso": "ST",
    "fx": "FX", "flexo-extension": "FX", "flexo": "FX",
}  # fmt: skip
_UCI_CHANNEL = re.compile(
    r"^Channel\s+\d+:\s*'([^']*)',\s*(\d+)\s+values,\s*engineering units:\s*([^,]*)", re.I
)
_UCI_DIGITAL = re.compile(r"^Digitals combined\b.*?:\s*(\d+)\s+values", re.I)
_SANTUZ_HEADER = (
    "time", "ME", "MA", "FL", "RF", "VM", "VL", "ST", "BF", "TA", "PL", "GM", "GL", "SO"
)  # fmt: skip
_EDF_KINDS = {0: "EDF", 1: "EDF+", 2: "BDF", 3: "BDF+"}  # pyedflib FILETYPE_* constants


class Annotation(NamedTuple):
    onset_s: float  # in the recording's own time base (same as Recording.t0_s)
    duration_s: float  # 0.0 for instantaneous events and when the file gives none
    text: str


class RecordingFormatError(ValueError):
    """A recording that cannot be used as it is. str() reads "<path>, line <n>: <reason>"."""

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None) -> None:
        # args mirror __init__ so that the exception pickles (multiprocessing, pytest-xdist).
        super().__init__(str(path), reason, line)
        self.path = str(path)
        self.reason = reason
        self.line = line

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}, line {self.line}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True, eq=False)
class Recording:
    rate_hz: float
    channels: tuple[str, ...]
    units: tuple[str, ...]  # "mV" for every EMG channel; other signals keep their own unit
    data: npt.NDArray[np.float32]  # (n_channels, n_samples), read-only
    t0_s: float
    annotations: tuple[Annotation, ...]
    source: str
    warnings: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.data.dtype != np.float32 or self.data.ndim != 2:
            raise ValueError(f"data must be 2-D float32, got {self.data.ndim}-D {self.data.dtype}")
        if not self.data.shape[0] == len(self.channels) == len(self.units):
            raise ValueError("data rows, channels and units must have the same length")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive number, got {self.rate_hz!r}")
        # The dataclass is frozen; make the samples so too, since one Recording may feed several
        # replay streams at once and an in-place filter in one must not leak into the others.
        self.data.setflags(write=False)

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate_hz


def load_recording(
    path: str | Path,
    *,
    fmt: str | None = None,
    rate_hz: float | None = None,
    units: str | None = None,
) -> Recording:
    """Read a recording. `fmt` forces a format (see FORMATS); `rate_hz` is needed for a CSV
    without time column and otherwise must agree with the file; `units` gives the EMG unit
    where the file does not ("mV" default for CSV, "uV" for santuz; EDF signals without a
    physical dimension). Raises RecordingFormatError for unusable content, ValueError for
    bad arguments, OSError if the file cannot be opened."""
    p = Path(path)
    if fmt is not None:
        fmt = {"bdf": "edf", "generic": "csv"}.get(fmt.lower(), fmt.lower())
        if fmt not in FORMATS:
            raise ValueError(f"unknown fmt {fmt!r}; use one of {', '.join(FORMATS)}")
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
    if units is not None and _mv_factor(units) is None:
        raise ValueError(f"unknown units {units!r}; use V, mV, uV or nV")

    raw, was_gz = _read_bytes(p)
    if not raw.strip():
        raise RecordingFormatError(p, "the file is empty" + (" (after gunzip)" if was_gz else ""))
    is_edf = raw.startswith((b"0       ", b"\xffBIOSEMI"))
    ext = _base_suffix(p)
    if fmt == "edf" or (fmt is None and is_edf):
        return _parse_edf(p, raw, was_gz, rate_hz, units)
    if fmt is None and ext in (".edf", ".bdf"):
        raise RecordingFormatError(p, f"named {ext} but does not start with an EDF/BDF header", 1)

    warnings: list[str] = []
    lines = _decode_lines(p, raw, warnings)
    if fmt is None:
        first = next((ln.strip() for ln in lines if ln.strip()), "")
        if first.lower().startswith("file name:"):
            fmt = "uci"
        elif tuple(c.strip() for c in first.split(",")) == _SANTUZ_HEADER:
            fmt = "santuz"
        else:
            fmt = "csv"
    if fmt == "uci":
        return _parse_uci(p, lines, warnings, rate_hz, units)
    return _parse_csv(p, lines, warnings, rate_hz, units, santuz=fmt == "santuz")


def select_channels(rec: Recording, mapping: Mapping[str, str]) -> Recording:
    """Keep and rename channels: `mapping` is role -> source channel name, e.g.
    {"VM": "VM", "VL": "EMG VL"}. The result's channels are the roles, in mapping order.
    Exact names win; otherwise a unique case-insensitive match is accepted."""
    if not mapping:
        raise ValueError("mapping is empty: name at least one role -> channel")
    index: list[int] = []
    missing: list[str] = []
    for role, name in mapping.items():
        hits = [i for i, c in enumerate(rec.channels) if c == name]
        if not hits:
            hits = [i for i, c in enumerate(rec.channels) if c.casefold() == name.casefold()]
        if len(hits) == 1:
            index.append(hits[0])
        else:
            missing.append(f"{name!r} (for {role})" if role != name else repr(name))
    if missing:
        raise RecordingFormatError(
            rec.source,
            f"no channel {', '.join(missing)} in this recording; "
            f"available channels: {', '.join(rec.channels)}",
        )
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


# ----------------------------------------------------------------------------- helpers


def _mv_factor(unit: str) -> float | None:
    return _TO_MV.get(unit.strip().replace("µ", "u").replace("μ", "u").lower())


def _base_suffix(p: Path) -> str:
    name = p.name.lower().removesuffix(".gz")
    return os.path.splitext(name)[1]


def _read_bytes(p: Path) -> tuple[bytes, bool]:
    raw = p.read_bytes()  # missing/unreadable file: let OSError say so, it is clear enough
    if raw[:2] != b"\x1f\x8b":  # gzip magic; content decides, not the extension
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as exc:
        raise RecordingFormatError(p, f"corrupt or truncated gzip data ({exc})") from None


def _decode_lines(p: Path, raw: bytes, warnings: list[str]) -> list[str]:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel "Unicode text" exports are UTF-16
        text = raw.decode("utf-16")
        warnings.append("decoded as UTF-16 (byte-order mark)")
    else:
        nul = raw.find(b"\x00", 0, 65536)
        if nul >= 0:
            raise RecordingFormatError(
                p,
                f"binary data (byte 0x00 at offset {nul}): not a text recording, or a text "
                "encoding other than UTF-8/Latin-1 without a byte-order mark",
                raw.count(b"\n", 0, nul) + 1,
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            # Latin-1 never fails: the UCI files declare it, and old exports write "µV" in it.
            text = raw.decode("latin-1")
            warnings.append("not valid UTF-8; decoded as Latin-1")
    # Universal newlines (CRLF in the UCI files, LF elsewhere, lone CR from old Mac exports),
    # but not str.splitlines(), which also splits on form feeds and would shift line numbers.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start a line
    for n, ln in enumerate(lines[:2000], start=1):
        ctrl = sum(1 for ch in ln if (ord(ch) < 32 and ch not in "\t\f") or 0x7F <= ord(ch) < 0xA0)
        if ctrl > max(2, len(ln) // 100):
            raise RecordingFormatError(
                p, "binary data (control characters): not a text recording", n
            )
    return lines


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _to_float(
    p: Path, rows: Sequence[Sequence[str]], line_nos: Sequence[int], names: Sequence[str], hint: str
) -> npt.NDArray[np.float64]:
    """Bulk-convert string cells; on failure find the first bad cell so the error names it."""
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError:
        for row, n in zip(rows, line_nos, strict=True):
            for cell, name in zip(row, names, strict=True):
                try:
                    float(cell)
                except ValueError:
                    reason = f"{name} value {cell!r} is not a number"
                    raise RecordingFormatError(p, reason + hint, n) from None
        arr = np.array([[float(c) for c in row] for row in rows], dtype=np.float64)
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        r, c = (int(v) for v in bad[0])
        reason = f"{names[c]} value {rows[r][c]!r} is not a finite number"
        raise RecordingFormatError(p, reason, line_nos[r])
    return arr


def _check_rate(p: Path, found: float, given: float | None, what: str) -> None:
    if given is not None and abs(given - found) > 1e-3 * found:
        raise RecordingFormatError(p, f"{what} gives {found:g} Hz but rate_hz={given:g} was passed")


# ----------------------------------------------------------------------------- UCI text


def _parse_uci(
    p: Path, lines: list[str], warnings: list[str], rate_hz: float | None, units: str | None
) -> Recording:
    if units is not None and _mv_factor(units) != 1.0:
        raise ValueError(f"UCI files declare their units (mV, deg); units={units!r} conflicts")
    _check_rate(p, _UCI_RATE_HZ, rate_hz, "the UCI dataset (documented rate)")
    # Header: "File Name:" then one line per column, ended by a blank line. Usually 7 lines, but
    # 9A-11A carry an extra "Digitals combined" column and so have 8 (not in the dataset README).
    if not lines or not lines[0].lower().startswith("file name:"):
        raise RecordingFormatError(p, "not a UCI file: the first line is not 'File Name: ...'", 1)
    try:
        blank = next(i for i, ln in enumerate(lines[:16]) if not ln.strip())
    except StopIteration:
        raise RecordingFormatError(p, "UCI header is not ended by a blank line", 1) from None
    file_name = lines[0].split(":", 1)[1].strip()
    names: list[str] = []  # mapped name per column; "" for the digital-event column
    units_in: list[str] = []
    declared: list[int] = []
    spanish = digital = False
    for n, ln in enumerate(lines[1:blank], start=2):
        if m := _UCI_CHANNEL.match(ln.strip()):
            label, count, unit = m.group(1).strip(), int(m.group(2)), m.group(3).strip()
            name = _UCI_NAMES.get(label.lower())
            if name is None or name in names:
                why = "a second" if name else "an unknown"
                raise RecordingFormatError(p, f"{why} channel {label!r} in the UCI header", n)
            if _mv_factor(unit) is None and unit.lower() != "deg":
                raise RecordingFormatError(p, f"unknown unit {unit!r} for channel {label!r}", n)
            spanish |= label.upper() != name
            names.append(name)
            units_in.append(unit)
            declared.append(count)
        elif _UCI_DIGITAL.match(ln.strip()):
            digital = True
            names.append("")
            units_in.append("")
            declared.append(0)
        else:
            raise RecordingFormatError(p, f"unrecognised UCI header line {ln.strip()!r}", n)
    emg = [i for i, u in enumerate(units_in) if _mv_factor(u) is not None]
    fx = next((i for i, u in enumerate(units_in) if u.lower() == "deg"), None)
    if not emg:
        raise RecordingFormatError(p, "the UCI header declares no EMG (mV) channel", blank)
    ncol = len(names)

    # Body. EMG is the timeline: rows with every EMG cell filled are samples. After the last one
    # only FX-only rows (goniometer ran on) and empty rows may follow; both are dropped.
    rows: list[list[str]] = []
    line_nos: list[int] = []
    first_trailing: int | None = None
    n_fx_only = n_empty = 0
    for n, ln in enumerate(lines[blank + 1 :], start=blank + 2):
        cells = [c.strip() for c in ln.split("\t")]
        if len(cells) > ncol and any(cells[ncol:]):
            reason = f"{len(cells)} columns, the header declares {ncol}"
            raise RecordingFormatError(p, reason, n)
        cells += [""] * (ncol - len(cells))
        filled = [bool(cells[i]) for i in emg]
        if all(filled):
            if first_trailing is not None:
                reason = f"row without EMG values inside the recording (EMG resumes at line {n})"
                raise RecordingFormatError(p, reason, first_trailing)
            rows.append(cells)
            line_nos.append(n)
        elif any(filled):
            gone = ", ".join(names[i] for i, f in zip(emg, filled, strict=True) if not f)
            raise RecordingFormatError(p, f"missing {gone} value in a data row", n)
        else:
            first_trailing = first_trailing or n
            if fx is not None and cells[fx]:
                n_fx_only += 1
                if not _is_number(cells[fx]):
                    warnings.append(
                        f"line {n}: non-numeric FX cell {cells[fx]!r} in a trailing FX-only row,"
                        " ignored"
                    )
            else:
                n_empty += 1
    if not rows:
        raise RecordingFormatError(p, "UCI header but no EMG data rows", blank + 1)
    if n_fx_only:
        warnings.append(f"dropped {n_fx_only} trailing FX-only rows (EMG is the timeline)")
    if n_empty:
        warnings.append(f"dropped {n_empty} trailing empty row(s)")

    if fx is not None:
        missing_fx = [k for k, r in enumerate(rows) if not r[fx]]
        for k in missing_fx:
            if k != len(rows) - 1 or k == 0:  # only the last row is a known export quirk
                raise RecordingFormatError(p, "missing FX value in a data row", line_nos[k])
            rows[k][fx] = rows[k - 1][fx]
            warnings.append(
                f"line {line_nos[k]}: last EMG row has no FX value; repeated the previous "
                f"one ({rows[k][fx]})"
            )
    if digital:
        d = names.index("")
        seen = sorted({r[d] for r in rows})
        warnings.append(
            f"ignored the 'Digitals combined' event column (8-line header variant; values: "
            f"{', '.join(seen[:5])}{', ...' if len(seen) > 5 else ''})"
        )
    for i in emg:
        if declared[i] != len(rows):
            warnings.append(f"header declares {declared[i]} {names[i]} values, read {len(rows)}")

    keep = [*emg, fx] if fx is not None else emg
    arr = _to_float(p, [[r[i] for i in keep] for r in rows], line_nos, [names[i] for i in keep], "")
    scale = np.array([_mv_factor(units_in[i]) or 1.0 for i in keep])[:, None]
    variant = ("B" if spanish else "A") + (", with digital-event column" if digital else "")
    return Recording(
        rate_hz=_UCI_RATE_HZ,
        channels=tuple(names[i] for i in keep),
        units=tuple("mV" if i in emg else "deg" for i in keep),
        data=np.ascontiguousarray((arr.T * scale).astype(np.float32)),
        t0_s=0.0,
        annotations=(),
        source=f"{p} (UCI lower-limb text, header variant {variant}, File Name: {file_name})",
        warnings=tuple(warnings),
    )


# ----------------------------------------------------------------------------- CSV


def _sniff_delimiter(sample: Sequence[str]) -> str:
    # csv.Sniffer guesses wrong on purely numeric data; a delimiter that splits every sample
    # line into the same number (>1) of fields is far more reliable for recordings.
    best, best_n = ",", 1
    for d in (",", "\t", ";"):
        counts = {len(ln.split(d)) for ln in sample if ln.strip()}
        if len(counts) == 1 and (n := counts.pop()) > best_n:
            best, best_n = d, n
    if best_n == 1 and sample:  # ragged sample: take whatever splits the header most
        best = max((",", "\t", ";"), key=lambda d: sample[0].count(d))
    return best


def _parse_csv(
    p: Path,
    lines: list[str],
    warnings: list[str],
    rate_hz: float | None,
    units: str | None,
    *,
    santuz: bool,
) -> Recording:
    h = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if h is None:
        raise RecordingFormatError(p, "the file holds only blank lines")
    delim = _sniff_delimiter(lines[h : h + 6])
    header = [c.strip() for c in next(csv.reader([lines[h]], delimiter=delim))]
    trailing_delim = len(header) > 1 and header[-1] == ""  # "a,b," exports; tolerated
    if trailing_delim:
        header.pop()
    if all(_is_number(c) for c in header):
        reason = "the first line holds numbers; a header row naming the columns is required"
        raise RecordingFormatError(p, reason, h + 1)
    if "" in header or len(set(header)) != len(header):
        reason = f"the header has an empty or repeated column name: {', '.join(header)}"
        raise RecordingFormatError(p, reason, h + 1)
    ncol = len(header)

    rows: list[list[str]] = []
    line_nos: list[int] = []
    gap: int | None = None  # first blank row; fine at the end, an error inside the data
    for n, ln in enumerate(lines[h + 1 :], start=h + 2):
        # csv.reader only where quotes appear: it is slower, and a stray quote would let it
        # swallow following lines and shift every line number after it.
        split = next(csv.reader([ln], delimiter=delim)) if '"' in ln else ln.split(delim)
        cells = [c.strip() for c in split]
        if trailing_delim and len(cells) == ncol + 1 and cells[-1] == "":
            cells.pop()
        if not any(cells):
            gap = gap or n
            continue
        if gap is not None:
            raise RecordingFormatError(
                p, f"empty row inside the data (data resumes at line {n})", gap
            )
        if len(cells) != ncol:
            k = len(cells)
            reason = (
                f"{k} value{'s' * (k != 1)}, but the header (line {h + 1}) names {ncol} columns"
            )
            raise RecordingFormatError(p, reason, n)
        if "" in cells:
            raise RecordingFormatError(p, f"empty {header[cells.index('')]} value", n)
        rows.append(cells)
        line_nos.append(n)
    if not rows:
        raise RecordingFormatError(p, "header but no data rows", h + 1)
    if gap is not None:
        warnings.append(f"dropped {len(lines) - gap + 1} trailing empty row(s)")
    hint = (
        " (decimal commas are not supported)"
        if delim == ";" and any("," in c for c in rows[0])
        else ""
    )
    arr = _to_float(p, rows, line_nos, header, hint)

    lower = [c.lower() for c in header]
    ti = next((lower.index(t) for t in _TIME_COLUMNS if t in lower), None)
    if ti is not None:
        rate, t0 = _rate_from_time(p, arr[:, ti], [r[ti] for r in rows], line_nos, rate_hz)
        how = f"time column {header[ti]!r}"
        if rate < 100:  # raw sEMG needs >= ~1 kHz; a "rate" this low means ms or sample counts
            warnings.append(f"time column gives only {rate:g} Hz: is it in seconds?")
    elif rate_hz is None:
        reason = (
            f"no time column ({', '.join(_TIME_COLUMNS)}) and no rate_hz given; "
            "pass rate_hz= with the sample rate"
        )
        raise RecordingFormatError(p, reason, h + 1)
    else:
        rate, t0, how = rate_hz, 0.0, "rate_hz given"
    keep = [i for i in range(ncol) if i != ti]
    if not keep:
        raise RecordingFormatError(p, "only a time column, no signal columns", h + 1)

    if units is None and santuz:
        units = "uV"
        warnings.append(
            "EMG units are not stated in the file; assumed µV as the dataset README argues "
            "(RMS 18-76, quantisation step 0.100708) and converted to mV"
        )
    factor = _mv_factor(units or "mV") or 1.0
    annotations = _santuz_cycles(p, warnings, t0, t0 + len(rows) / rate) if santuz else ()
    kind = "santuz walking CSV" if santuz else f"generic CSV, {delim!r}-separated"
    return Recording(
        rate_hz=rate,
        channels=tuple(header[i] for i in keep),
        units=("mV",) * len(keep),
        data=np.ascontiguousarray((arr[:, keep].T * factor).astype(np.float32)),
        t0_s=t0,
        annotations=annotations,
        source=f"{p} ({kind}, {how}, units {units or 'mV'})",
        warnings=tuple(warnings),
    )


def _rate_from_time(
    p: Path, t: npt.NDArray[np.float64], text: list[str], line_nos: list[int], given: float | None
) -> tuple[float, float]:
    if len(t) < 2:
        if given is None:
            raise RecordingFormatError(p, "one row: a time column cannot give a rate", line_nos[0])
        return given, float(t[0])
    steps = np.diff(t)
    if (back := np.flatnonzero(steps <= 0)).size:
        i = int(back[0])
        reason = f"time goes backwards or repeats ({text[i]} -> {text[i + 1]})"
        raise RecordingFormatError(p, reason, line_nos[i + 1])
    # Lower median: missing samples only lengthen steps, and with very few steps the plain
    # median would average a jump into the reference step and hide it.
    dt = float(np.sort(steps)[(len(steps) - 1) // 2])
    # Printed times are rounded: two rounded values differ from the true step by up to one unit
    # of the last printed digit. Tolerate that (but never half a step), else 0.1 % jitter.
    quantum = max(
        (10.0 ** -len(s.split(".")[1]) if "." in s else 1.0 for s in text if "e" not in s.lower()),
        default=0.0,
    )
    tol = min(max(1e-3 * dt, 1.01 * quantum), 0.5 * dt)
    if (jump := np.flatnonzero(np.abs(steps - dt) > tol)).size:
        i = int(jump[0])
        reason = (
            f"time step breaks: {text[i]} -> {text[i + 1]} is a step of {steps[i] * 1e3:.6g} ms, "
            f"expected {dt * 1e3:.6g} ms (missing or duplicated samples?)"
        )
        raise RecordingFormatError(p, reason, line_nos[i + 1])
    rate = round((len(t) - 1) / float(t[-1] - t[0]), 6)  # whole span: better than one step
    _check_rate(p, rate, given, "the time column")
    return rate, float(t[0])


def _santuz_cycles(p: Path, warnings: list[str], t0: float, t_end: float) -> tuple[Annotation, ...]:
    name = p.name.removesuffix(".gz")
    if not name.endswith("_emg.csv"):
        warnings.append("file name does not end in _emg.csv; no *_cycles.csv looked for")
        return ()
    stem = name.removesuffix("_emg.csv")
    cp = next(
        (c for c in (p.with_name(f"{stem}_cycles.csv"), p.with_name(f"{stem}_cycles.csv.gz"))
         if c.exists()), None)  # fmt: skip
    if cp is None:
        warnings.append(f"no {stem}_cycles.csv beside the file; no gait events")
        return ()
    lines = _decode_lines(cp, _read_bytes(cp)[0], warnings)
    if not lines or [c.strip() for c in lines[0].split(",")] != ["touchdown_s", "liftoff_s"]:
        raise RecordingFormatError(cp, "expected the header 'touchdown_s,liftoff_s'", 1)
    events: list[Annotation] = []
    for n, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            continue
        cells = [c.strip() for c in ln.split(",")]
        try:
            td, lo = (float(c) for c in cells)
        except ValueError:
            raise RecordingFormatError(
                cp, f"expected two times in seconds, got {ln!r}", n
            ) from None
        events += [Annotation(td, 0.0, "touchdown"), Annotation(lo, 0.0, "liftoff")]
    outside = [a for a in events if not t0 <= a.onset_s <= t_end]
    if outside:
        warnings.append(f"{len(outside)} gait event(s) lie outside the EMG time span")
    return tuple(sorted(events))


# ----------------------------------------------------------------------------- EDF / BDF


def _parse_edf(
    p: Path, raw: bytes, was_gz: bool, rate_hz: float | None, units: str | None
) -> Recording:
    try:
        import pyedflib
    except ImportError as exc:  # optional dependency
        raise ImportError("reading EDF/BDF needs pyedflib: install the 'edf' extra") from exc
    warnings: list[str] = []
    tmp: str | None = None
    src = str(p)
    if was_gz:  # edflib opens files by name only
        fd, tmp = tempfile.mkstemp(suffix=_base_suffix(p) or ".edf")
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        src = tmp
    try:
        try:
            reader = pyedflib.EdfReader(src)
        except OSError as exc:
            reason = str(exc).replace(src, "").strip(" :") or "unreadable"
            raise RecordingFormatError(p, f"not a readable EDF/BDF file: {reason}") from None
        with reader:
            n = reader.signals_in_file
            labels = [s.strip() for s in reader.getSignalLabels()]
            dims = [reader.getPhysicalDimension(i).strip() for i in range(n)]
            rates = [float(reader.getSampleFrequency(i)) for i in range(n)]
            signals = [reader.readSignal(i) for i in range(n)]
            onsets, durations, texts = reader.readAnnotations()
            kind = _EDF_KINDS.get(int(reader.filetype), "EDF")
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if n == 0:
        raise RecordingFormatError(p, "the EDF file holds no signals")
    if len(set(labels)) != n:
        raise RecordingFormatError(p, f"repeated signal labels: {', '.join(labels)}")
    # EMG = signals in a voltage unit; a signal with no dimension counts as EMG in `units`.
    factors = [_mv_factor(d) if d else (_mv_factor(units) if units else None) for d in dims]
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
    rate = rates[emg[0]]
    _check_rate(p, rate, rate_hz, "the EDF header")
    keep: list[int] = []
    for i in range(n):
        if rates[i] == rate:
            keep.append(i)
        else:
            warnings.append(f"dropped signal {labels[i]!r} ({rates[i]:g} Hz, not the EMG rate)")
    length = min(len(signals[i]) for i in keep)
    if any(len(signals[i]) != length for i in keep):
        warnings.append(f"signals differ in length; cut to the shortest ({length} samples)")
    data = np.stack([signals[i][:length] * (factors[i] or 1.0) for i in keep]).astype(np.float32)
    annotations = tuple(
        Annotation(float(o), max(float(d), 0.0), str(t))  # edflib gives -1 for "no duration"
        for o, d, t in zip(onsets, durations, texts, strict=True)
    )
    return Recording(
        rate_hz=rate,
        channels=tuple(labels[i] for i in keep),
        units=tuple("mV" if factors[i] is not None else dims[i] for i in keep),
        data=data,
        t0_s=0.0,
        annotations=annotations,
        source=f"{p} ({kind})",
        warnings=tuple(warnings),
    )
