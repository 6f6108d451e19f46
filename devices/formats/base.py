"""What every recording reader returns, and the checks they share.

A reader gives a `RecordingStream`: the header (rate, channels, units, start time, annotations)
as soon as the file is opened, then the samples in chunks of float32 millivolts, so that a
2 GB file replays in a few MB. `RecordingStream.read_all()` makes the whole-file `Recording`
that analyses and tests use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

import numpy as np
import numpy.typing as npt

# Multiplier that takes a value in the given unit to millivolts. Keys are lower-cased with the
# micro sign folded to "u", because EDF headers and CSV exports spell µV every possible way.
_TO_MV = {"v": 1e3, "mv": 1.0, "uv": 1e-3, "nv": 1e-6}
# Larger than any biosignal in mV (1 kV), small enough that squaring it (the envelope does) stays
# finite in float32: a value beyond it is a wrong unit or a broken file, and would otherwise run
# a session into inf and NaN (issue 11: 1e308 started a session that died on JSON encoding).
MAX_ABS_VALUE = 1e6


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


Chunk = npt.NDArray[np.float32]  # (n_channels, n_samples) millivolts (or the channel's unit)


class RecordingStream:
    """A recording opened for reading in chunks. Iterating yields float32 arrays of shape
    (n_channels, k); `warnings` grows while reading (some oddities show only at the end).
    Errors found later in the file raise `RecordingFormatError` from the iteration."""

    def __init__(
        self,
        *,
        rate_hz: float,
        channels: tuple[str, ...],
        units: tuple[str, ...],
        t0_s: float,
        annotations: tuple[Annotation, ...],
        source: str,
        warnings: list[str],
        chunks: Iterator[Chunk],
        close: Callable[[], None] | None = None,
    ) -> None:
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz!r}")
        self.rate_hz = rate_hz
        self.channels = channels
        self.units = units
        self.t0_s = t0_s
        self.annotations = annotations
        self.source = source
        self.warnings = warnings
        self._chunks = chunks
        self._close = close

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def select(self, mapping: Mapping[str, str]) -> RecordingStream:
        """Keep and rename channels (see `select_channels`); the same file, fewer rows."""
        index = resolve_channels(self.source, self.channels, mapping)
        return RecordingStream(
            rate_hz=self.rate_hz,
            channels=tuple(mapping),
            units=tuple(self.units[i] for i in index),
            t0_s=self.t0_s,
            annotations=self.annotations,
            source=self.source,
            warnings=self.warnings,
            chunks=(np.ascontiguousarray(c[index]) for c in self._chunks),
            close=self.close,
        )

    def read_all(self) -> Recording:
        with self:
            parts = list(self._chunks)
        data = (
            np.concatenate(parts, axis=1)
            if parts
            else np.zeros((len(self.channels), 0), dtype=np.float32)
        )
        return Recording(
            rate_hz=self.rate_hz,
            channels=self.channels,
            units=self.units,
            data=np.ascontiguousarray(data, dtype=np.float32),
            t0_s=self.t0_s,
            annotations=self.annotations,
            source=self.source,
            warnings=tuple(self.warnings),
        )


def resolve_channels(source: str, channels: Sequence[str], mapping: Mapping[str, str]) -> list[int]:
    """Row index per role. Exact names win; otherwise a unique case-insensitive match."""
    if not mapping:
        raise ValueError("mapping is empty: name at least one role -> channel")
    index: list[int] = []
    missing: list[str] = []
    for role, name in mapping.items():
        hits = [i for i, c in enumerate(channels) if c == name]
        if not hits:
            hits = [i for i, c in enumerate(channels) if c.casefold() == name.casefold()]
        if len(hits) == 1:
            index.append(hits[0])
        else:
            missing.append(f"{name!r} (for {role})" if role != name else repr(name))
    if missing:
        raise RecordingFormatError(
            source,
            f"no channel {', '.join(missing)} in this recording; "
            f"available channels: {', '.join(channels)}",
        )
    return index


# ----------------------------------------------------------------------------- shared checks


def mv_factor(unit: str) -> float | None:
    return _TO_MV.get(unit.strip().replace("µ", "u").replace("μ", "u").lower())


def base_suffix(p: Path) -> str:
    name = p.name.lower().removesuffix(".gz")
    return os.path.splitext(name)[1]


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def check_rate(p: Path, found: float, given: float | None, what: str) -> None:
    if given is not None and abs(given - found) > 1e-3 * found:
        raise RecordingFormatError(p, f"{what} gives {found:g} Hz but rate_hz={given:g} was passed")


def to_float(
    p: Path, rows: Sequence[Sequence[str]], line_nos: Sequence[int], names: Sequence[str], hint: str
) -> npt.NDArray[np.float64]:
    """Bulk-convert string cells; on failure find the first bad cell so the error names it."""
    try:
        # Python's float per cell then one array: about a third faster than numpy converting
        # the strings itself, and the same numbers (both round correctly).
        arr = np.array([list(map(float, row)) for row in rows], dtype=np.float64)
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
    return arr.reshape(len(rows), len(names))


def cell_at(
    cells: Sequence[Sequence[str]], line_nos: Sequence[int], columns: Sequence[int]
) -> Callable[[int, int], tuple[str, int | None]]:
    """`where` for `checked_chunk` over text rows: the cell as written and its line."""
    return lambda c, s: (repr(cells[s][columns[c]]), line_nos[s])


def checked_chunk(
    p: Path,
    values: npt.NDArray[np.float64],
    names: Sequence[str],
    where: Callable[[int, int], tuple[str, int | None]],
) -> Chunk:
    """(channels, samples) scaled values → float32, refusing any beyond ±MAX_ABS_VALUE.
    `where(channel, sample)` gives the cell as written and its line, for the error."""
    out_of_range = ~(np.abs(values) <= MAX_ABS_VALUE)  # also catches NaN
    if out_of_range.any():
        c, s = (int(v) for v in np.argwhere(out_of_range)[0])
        cell, line = where(c, s)
        reason = (
            f"{names[c]} value {cell} is out of range (beyond ±{MAX_ABS_VALUE:g} once in mV): "
            "wrong units, or a broken file"
        )
        raise RecordingFormatError(p, reason, line)
    return np.ascontiguousarray(values, dtype=np.float32)


class BadRows:
    """Bad cells met inside the data of a text recording (a typo, an empty cell, a row cut
    short). Each bad cell is held at its column's previous value, so the samples around
    it, and the time of every later sample, are kept; every bad row is counted and the first
    few are kept as typed errors for the warnings. A file with more bad rows than
    `max_fraction` of its rows (beyond `free` of them) is refused as broken."""

    KEEP = 5

    def __init__(self, p: Path, *, max_fraction: float = 0.01, free: int = 10) -> None:
        self.p = p
        self.max_fraction = max_fraction
        self.free = free
        self.count = 0
        self.rows_seen = 0
        self.errors: list[RecordingFormatError] = []

    def add(self, error: RecordingFormatError) -> None:
        self.count += 1
        if len(self.errors) < self.KEEP:
            self.errors.append(error)
        if self.count > self.free and self.count > self.max_fraction * max(self.rows_seen, 1):
            first = self.errors[0]
            reason = (
                f"{self.count} bad rows in the first {self.rows_seen}: too many to hold "
                f"(the first: {first.reason})"
            )
            raise RecordingFormatError(self.p, reason, first.line)

    def warning(self) -> str | None:
        if not self.count:
            return None
        shown = "; ".join(
            f"line {e.line}: {e.reason}" if e.line is not None else e.reason for e in self.errors
        )
        more = ", ..." if self.count > len(self.errors) else ""
        return (
            f"{self.count} bad row(s) inside the data, each bad cell held at its column's "
            f"previous value: {shown}{more}"
        )


def to_float_holding(
    p: Path,
    rows: Sequence[Sequence[str]],
    line_nos: Sequence[int],
    names: Sequence[str],
    bad: BadRows,
    previous: npt.NDArray[np.float64] | None,
    hold: Sequence[bool] | None = None,
) -> npt.NDArray[np.float64]:
    """Like `to_float`, but a cell that holds no number (a typo, empty) in a column where
    `hold` is true (default: every column) keeps its column's previous value (0 before the
    first) and its row is counted in `bad`. A number that is not finite is still an error, as
    is a value out of range later (`checked_chunk`): those say wrong units or a broken file.
    `previous`: the last row of the batch before."""
    bad.rows_seen += len(rows)
    try:
        return to_float(p, rows, line_nos, names, "")
    except RecordingFormatError as exc:
        if "is not a number" not in exc.reason:
            raise
    holding = [True] * len(names) if hold is None else list(hold)
    out = np.zeros((len(rows), len(names)))
    last = np.zeros(len(names)) if previous is None else previous.astype(np.float64)
    for r, (row, n) in enumerate(zip(rows, line_nos, strict=True)):
        why = ""
        for c, cell in enumerate(row):
            try:
                v = float(cell)
            except ValueError:
                what = "empty" if cell == "" else f"{cell[:20]!r} is not a number"
                if not holding[c]:
                    raise RecordingFormatError(p, f"{names[c]} value {what}", n) from None
                why = why or f"{names[c]} value {what}"
                v = float(last[c])
            if not math.isfinite(v):
                reason = f"{names[c]} value {cell[:20]!r} is not a finite number"
                raise RecordingFormatError(p, reason, n)
            out[r, c] = last[c] = v
        if why:
            bad.add(RecordingFormatError(p, why, n))
    return out
