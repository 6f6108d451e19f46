"""CSV/TSV with a header row, read in batches: a time column gives the rate (checked row by row
for gaps and repeats), else `rate_hz` must be given. A signal cell that holds no number (a typo,
empty) keeps its column's previous value and is counted (`BadRows`), so the rows around it are
kept; a bad time cell, a non-finite or out-of-range number still stop the file there. Also
reads the station's own `--record` CSV (`index,t_s,VM_mV,...`): its raw `<role>_mV` columns are
the channels."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from devices.formats.base import (
    MAX_ABS_VALUE,
    Annotation,
    BadRows,
    Chunk,
    RecordingFormatError,
    RecordingStream,
    checked_chunk,
    is_number,
    mv_factor,
    to_float,
    to_float_holding,
)
from devices.formats.time_column import TimeColumn

TIME_COLUMNS = ("time", "t", "time_s", "t_s", "timestamp")
BATCH_ROWS = 8192
PROBE_ROWS = 65536  # rows whose time column sets the rate; a file this short is read whole
RECORD_PREFIX = ("index", "t_s")  # feedback.outputs.recorder's samples CSV


def sniff_delimiter(sample: Sequence[str]) -> str:
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


@dataclass
class _Header:
    line: int
    delim: str
    names: list[str]
    trailing_delim: bool
    rest: Iterator[tuple[int, str]] = field(repr=False)


def read_header(p: Path, lines: Iterable[tuple[int, str]]) -> _Header:
    it = iter(lines)
    first = next(((n, ln) for n, ln in it if ln.strip()), None)
    if first is None:
        raise RecordingFormatError(p, "the file holds only blank lines")
    h, text = first
    look = list(itertools.islice(it, 5))
    delim = sniff_delimiter([text] + [ln for _, ln in look])
    header = [c.strip() for c in next(csv.reader([text], delimiter=delim))]
    trailing_delim = len(header) > 1 and header[-1] == ""  # "a,b," exports; tolerated
    if trailing_delim:
        header.pop()
    if all(is_number(c) for c in header):
        reason = "the first line holds numbers; a header row naming the columns is required"
        raise RecordingFormatError(p, reason, h)
    if "" in header or len(set(header)) != len(header):
        reason = f"the header has an empty or repeated column name: {', '.join(header)}"
        raise RecordingFormatError(p, reason, h)
    return _Header(h, delim, header, trailing_delim, itertools.chain(look, it))


Floats = npt.NDArray[np.float64]


@dataclass
class _Batch:
    line_nos: list[int]
    chunk: Chunk
    t: Floats | None
    lines: list[str]


class _Rows:
    """The data rows in batches of floats. A batch of plain rows is parsed by numpy's C reader;
    anything unusual in it (quotes, blanks, a bad or out-of-range cell, a short row) sends that
    batch through the line-by-line path, which says exactly what and where."""

    def __init__(
        self,
        p: Path,
        head: _Header,
        warnings: list[str],
        fits: Callable[[Floats], bool],
        convert: Callable[[list[int], Floats, list[str]], _Batch],
    ) -> None:
        self.p, self.head, self.warnings, self.fits, self.convert = p, head, warnings, fits, convert
        self.ncol = len(head.names)
        self.gap: int | None = None  # first blank row; fine at the end, an error inside the data
        self.hint: str | None = None
        self.bad = BadRows(p)
        self.hold: list[bool] | None = None  # per column: may a bad cell be held (not time)
        self.previous: Floats | None = None  # the last row parsed

    def __iter__(self) -> Iterator[_Batch]:
        last = self.head.line
        while batch := list(itertools.islice(self.head.rest, BATCH_ROWS)):
            last = batch[-1][0]
            gap = self.gap
            try:
                parsed = self._parse(batch)
            except RecordingFormatError as exc:
                # Hand out the good rows before the bad one, then stop: nothing readable is lost.
                good = [row for row in batch if exc.line is not None and row[0] < exc.line]
                if good:
                    self.gap = gap
                    try:
                        parsed = self._parse(good)
                    except RecordingFormatError:
                        raise exc from None
                    if parsed is not None:
                        yield parsed
                raise exc from None
            if parsed is not None:
                yield parsed
        if self.gap is not None:
            self.warnings.append(f"dropped {last - self.gap + 1} trailing empty row(s)")
        if (held := self.bad.warning()) is not None:
            self.warnings.append(held)

    def _parse(self, batch: list[tuple[int, str]]) -> _Batch | None:
        parsed = self._fast(batch)
        if parsed is not None:
            self.bad.rows_seen += len(batch)
        else:
            parsed = self._slow(batch)
        if parsed is None:
            return None
        self.previous = parsed[1][-1]
        return self.convert(*parsed)

    def cells(self, line: str) -> list[str]:
        # csv.reader only where quotes appear: it is slower, and a stray quote would let it
        # swallow following lines and shift every line number after it.
        delim = self.head.delim
        split = next(csv.reader([line], delimiter=delim)) if '"' in line else line.split(delim)
        return [c.strip() for c in split]

    def column_of(self, lines: list[str], column: int) -> Callable[[int], str]:
        """Row k's cell in `column` as written (looked up only when an error needs it)."""
        return lambda k: self.cells(lines[k])[column]

    def cell_at(
        self, lines: list[str], line_nos: list[int], columns: list[int]
    ) -> Callable[[int, int], tuple[str, int | None]]:
        """`where` for `checked_chunk`: the cell as written and its line."""
        return lambda c, s: (repr(self.cells(lines[s])[columns[c]]), line_nos[s])

    def _fast(self, batch: list[tuple[int, str]]) -> tuple[list[int], Floats, list[str]] | None:
        if self.gap is not None or self.hint is None:  # the first batch sets the hint: slow
            return None
        lines = [ln for _, ln in batch]
        text = "\n".join(lines)
        if '"' in text:
            return None
        try:
            arr = np.loadtxt(
                io.StringIO(text), delimiter=self.head.delim, comments=None, ndmin=2
            ).astype(np.float64, copy=False)
        except ValueError:
            return None
        # loadtxt skips blank lines: a row count that differs means one was there.
        if arr.shape != (len(lines), self.ncol) or not np.isfinite(arr).all() or not self.fits(arr):
            return None
        return [n for n, _ in batch], arr, lines

    def _slow(self, batch: list[tuple[int, str]]) -> tuple[list[int], Floats, list[str]] | None:
        p, names, ncol = self.p, self.head.names, self.ncol
        rows: list[list[str]] = []
        line_nos: list[int] = []
        lines: list[str] = []
        for n, ln in batch:
            cells = self.cells(ln)
            if self.head.trailing_delim and len(cells) == ncol + 1 and cells[-1] == "":
                cells.pop()
            if not any(cells):
                self.gap = self.gap or n
                continue
            if self.gap is not None:
                raise RecordingFormatError(
                    p, f"empty row inside the data (data resumes at line {n})", self.gap
                )
            if len(cells) != ncol:
                k = len(cells)
                reason = (
                    f"{k} value{'s' * (k != 1)}, but the header (line {self.head.line}) names "
                    f"{ncol} columns"
                )
                raise RecordingFormatError(p, reason, n)
            hold = self.hold
            if "" in cells and (hold is None or not hold[cells.index("")]):
                raise RecordingFormatError(p, f"empty {names[cells.index('')]} value", n)
            rows.append(cells)
            line_nos.append(n)
            lines.append(ln)
        if not rows:
            return None
        if self.hint is None:
            decimal_comma = self.head.delim == ";" and any("," in c for c in rows[0])
            self.hint = " (decimal commas are not supported)" if decimal_comma else ""
        if self.hint or self.hold is None:  # decimal commas: a bad file, not bad cells
            return line_nos, to_float(p, rows, line_nos, names, self.hint), lines
        arr = to_float_holding(p, rows, line_nos, names, self.bad, self.previous, self.hold)
        return line_nos, arr, lines


def open_csv(
    p: Path,
    lines: Iterable[tuple[int, str]],
    warnings: list[str],
    rate_hz: float | None,
    units: str | None,
    *,
    kind: str = "",
    default_units: str = "mV",
    annotations_of: Callable[[], tuple[Annotation, ...]] | None = None,
    end_check: Callable[[float, float], None] | None = None,
) -> RecordingStream:
    head = read_header(p, lines)
    names = head.names
    ti, keep, channels, own_record = _columns(names)
    kind = kind or (
        "vm-feedback record CSV" if own_record else f"generic CSV, {head.delim!r}-separated"
    )
    factor = mv_factor(units or default_units) or 1.0

    def convert(line_nos: list[int], arr: Floats, text: list[str]) -> _Batch:
        chunk = checked_chunk(
            p, arr[:, keep].T * factor, [names[i] for i in keep], rows.cell_at(text, line_nos, keep)
        )
        t = None if ti is None else arr[:, ti].copy()
        return _Batch(line_nos, chunk, t, text)

    rows = _Rows(
        p,
        head,
        warnings,
        lambda a: bool((np.abs(a[:, keep]) * factor <= MAX_ABS_VALUE).all()),
        convert,
    )
    rows.hold = [i != ti for i in range(len(names))]

    source = iter(rows)
    probe, n_probe = _probe(source)
    if not probe:
        raise RecordingFormatError(p, "header but no data rows", head.line)
    rate, t0, clock, how = _timing(p, rows, probe, ti, rate_hz, warnings)
    if not keep:
        what = "no <channel>_mV column" if own_record else "only a time column, no signal columns"
        raise RecordingFormatError(p, what, head.line)

    def chunks() -> Generator[Chunk]:
        n = 0
        for b in itertools.chain(probe, source):
            if clock is not None and n >= n_probe and b.t is not None and ti is not None:
                try:
                    clock.follow(b.t, b.line_nos, rows.column_of(b.lines, ti))
                except RecordingFormatError as exc:  # the rows before the break still play
                    good = sum(1 for k in b.line_nos if exc.line is not None and k < exc.line)
                    if good:
                        yield b.chunk[:, :good]
                    raise
            n += len(b.line_nos)
            yield b.chunk
        if end_check is not None:
            end_check(t0, t0 + n / rate)

    out = chunks()
    return RecordingStream(
        rate_hz=rate,
        channels=channels,
        units=("mV",) * len(keep),
        t0_s=t0,
        annotations=annotations_of() if annotations_of else (),
        source=f"{p} ({kind}, {how}, units {units or default_units})",
        warnings=warnings,
        chunks=out,
        close=out.close,
    )


def _columns(names: list[str]) -> tuple[int | None, list[int], tuple[str, ...], bool]:
    """The time column, the signal columns and their channel names, and whether the file is
    the station's own record (whose raw `<role>_mV` columns are the channels)."""
    lower = [c.lower() for c in names]
    own_record = tuple(lower[:2]) == RECORD_PREFIX
    ti = next((lower.index(t) for t in TIME_COLUMNS if t in lower), None)
    if own_record:
        keep = [i for i, c in enumerate(names) if c.endswith("_mV") and not c.endswith("_env_mV")]
        return ti, keep, tuple(names[i].removesuffix("_mV") for i in keep), True
    keep = [i for i in range(len(names)) if i != ti]
    return ti, keep, tuple(names[i] for i in keep), False


def _probe(source: Iterator[_Batch]) -> tuple[list[_Batch], int]:
    """The first batches, up to PROBE_ROWS rows: enough for the time column to set the rate."""
    probe: list[_Batch] = []
    n_probe = 0
    for b in source:
        probe.append(b)
        n_probe += len(b.line_nos)
        if n_probe >= PROBE_ROWS:
            break
    return probe, n_probe


def _timing(
    p: Path,
    rows: _Rows,
    probe: list[_Batch],
    ti: int | None,
    rate_hz: float | None,
    warnings: list[str],
) -> tuple[float, float, TimeColumn | None, str]:
    """Rate, start time, the clock that checks the later rows, and how the rate was found."""
    head = rows.head
    if ti is not None:
        t = np.concatenate([b.t for b in probe if b.t is not None])
        text = [rows.cells(ln)[ti] for b in probe for ln in b.lines]
        line_nos = [n for b in probe for n in b.line_nos]
        rate, t0, clock = TimeColumn.from_first_rows(p, t, text, line_nos, rate_hz)
        if rate < 100:  # raw sEMG needs >= ~1 kHz; a "rate" this low means ms or sample counts
            warnings.append(f"time column gives only {rate:g} Hz: is it in seconds?")
        return rate, t0, clock, f"time column {head.names[ti]!r}"
    if rate_hz is None:
        reason = (
            f"no time column ({', '.join(TIME_COLUMNS)}) and no sample rate given "
            "(replay: add ?rate=HZ to the spec; load_recording: rate_hz=)"
        )
        raise RecordingFormatError(p, reason, head.line)
    return rate_hz, 0.0, None, "rate_hz given"
