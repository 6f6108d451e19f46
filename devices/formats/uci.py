"""UCI "EMG dataset in Lower Limb" text export (Biometrics DataLOG): 1000 Hz, RF/BF/VM/ST in mV
and the knee angle FX in degrees, tab-separated, read in batches.

A bad row inside the data (a non-numeric or empty cell, EMG missing in a row, an empty row
between data rows) does not cost the file: each bad cell is held at its column's previous value
so that every other sample keeps its time, and the rows are counted and named in the warnings
(`devices.formats.base.BadRows`). Structural faults (extra columns, a broken header) and numbers
that cannot be right (NaN, infinite, out of range: wrong units or a broken file) still refuse
the file."""

from __future__ import annotations

import itertools
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devices.formats.base import (
    BadRows,
    Chunk,
    RecordingFormatError,
    RecordingStream,
    cell_at,
    check_rate,
    checked_chunk,
    is_number,
    mv_factor,
    to_float_holding,
)

RATE_HZ = 1000.0  # documented by the dataset (docs/BDSEMG_eng.txt), not stated in the files
BATCH_ROWS = 8192
_NAMES = {  # variant A short names, variant B Spanish names (two spellings each)
    "rf": "RF", "recto femoral": "RF",
    "bf": "BF", "biceps femoral": "BF",
    "vm": "VM", "vasto medial": "VM",
    "st": "ST", "semitendinoso": "ST", "emg semitendinoso": "ST",
    "fx": "FX", "flexo-extension": "FX", "flexo": "FX",
}  # fmt: skip
_CHANNEL = re.compile(
    r"^Channel\s+\d+:\s*'([^']*)',\s*(\d+)\s+values,\s*engineering units:\s*([^,]*)", re.I
)
_DIGITAL = re.compile(r"^Digitals combined\b.*?:\s*(\d+)\s+values", re.I)


def is_uci_first_line(line: str) -> bool:
    return line.strip().lower().startswith("file name:")


def open_uci(
    p: Path,
    lines: Iterable[tuple[int, str]],
    warnings: list[str],
    rate_hz: float | None,
    units: str | None,
) -> RecordingStream:
    if units is not None and mv_factor(units) != 1.0:
        raise ValueError(f"UCI files declare their units (mV, deg); units={units!r} conflicts")
    check_rate(p, RATE_HZ, rate_hz, "the UCI dataset (documented rate)")
    h = _Header.read(p, iter(lines))
    names, units_in, emg = h.names, h.units, h.emg
    fx = next((i for i, u in enumerate(units_in) if u.lower() == "deg"), None)
    keep = [*emg, fx] if fx is not None else emg
    scale = np.array([mv_factor(units_in[i]) or 1.0 for i in keep])[:, None]
    kept_names = [names[i] for i in keep]
    body_state = _Body(p, names, emg, fx, h.digital, warnings)
    whole = keep == list(range(len(names)))

    def chunks() -> Generator[Chunk]:
        rows = body_state.rows(h.body)
        previous = None
        while batch := list(itertools.islice(rows, BATCH_ROWS)):
            line_nos = [n for n, _ in batch]
            # Every column kept in order (no digital column): the rows as they are.
            cells = [r for _, r in batch] if whole else [[r[i] for i in keep] for _, r in batch]
            arr = to_float_holding(p, cells, line_nos, kept_names, body_state.bad, previous)
            previous = arr[-1]
            columns = range(len(keep))
            yield checked_chunk(p, arr.T * scale, kept_names, cell_at(cells, line_nos, columns))
        if not body_state.n_rows:
            raise RecordingFormatError(p, "UCI header but no EMG data rows", h.blank_line)
        if (held := body_state.bad.warning()) is not None:
            warnings.append(held)
        for i in emg:
            if h.declared[i] != body_state.n_rows:
                warnings.append(
                    f"header declares {h.declared[i]} {names[i]} values, read {body_state.n_rows}"
                )

    # The first batch is read now, so that a file that is broken early fails on opening.
    first = chunks()
    head_chunk = next(first, None)
    variant = ("B" if h.spanish else "A") + (", with digital-event column" if h.digital else "")

    def all_chunks() -> Generator[Chunk]:
        if head_chunk is not None:
            yield head_chunk
        yield from first

    out = all_chunks()
    return RecordingStream(
        rate_hz=RATE_HZ,
        channels=tuple(kept_names),
        units=tuple("mV" if i in emg else "deg" for i in keep),
        t0_s=0.0,
        annotations=(),
        source=f"{p} (UCI lower-limb text, header variant {variant}, File Name: {h.file_name})",
        warnings=warnings,
        chunks=out,
        close=out.close,
    )


@dataclass
class _Header:
    """The header: "File Name:" then one line per column, ended by a blank line. Usually 7
    lines, but 9A-11A carry an extra "Digitals combined" column and so have 8 (not in the
    dataset README)."""

    file_name: str
    blank_line: int  # the line that ends the header
    body: Iterator[tuple[int, str]] = field(repr=False)
    names: list[str] = field(default_factory=list)  # mapped per column; "" for the digital one
    units: list[str] = field(default_factory=list)
    declared: list[int] = field(default_factory=list)  # values per column, as the header says
    spanish: bool = False  # variant B's names
    digital: bool = False  # the "Digitals combined" event column

    @classmethod
    def read(cls, p: Path, it: Iterator[tuple[int, str]]) -> _Header:
        head = list(itertools.islice(it, 16))
        if not head or head[0][0] != 1 or not is_uci_first_line(head[0][1]):
            raise RecordingFormatError(
                p, "not a UCI file: the first line is not 'File Name: ...'", 1
            )
        try:
            blank = next(i for i, (_, ln) in enumerate(head) if not ln.strip())
        except StopIteration:
            raise RecordingFormatError(p, "UCI header is not ended by a blank line", 1) from None
        file_name = head[0][1].split(":", 1)[1].strip()
        h = cls(file_name, head[blank][0], itertools.chain(head[blank + 1 :], it))
        for n, ln in head[1:blank]:
            h._column(p, n, ln.strip())
        if not h.emg:
            reason = "the UCI header declares no EMG (mV) channel"
            raise RecordingFormatError(p, reason, h.blank_line - 1)
        return h

    @property
    def emg(self) -> list[int]:
        return [i for i, u in enumerate(self.units) if mv_factor(u) is not None]

    def _column(self, p: Path, n: int, line: str) -> None:
        if m := _CHANNEL.match(line):
            label, count, unit = m.group(1).strip(), int(m.group(2)), m.group(3).strip()
            name = _NAMES.get(label.lower())
            if name is None or name in self.names:
                why = "a second" if name else "an unknown"
                raise RecordingFormatError(p, f"{why} channel {label!r} in the UCI header", n)
            if mv_factor(unit) is None and unit.lower() != "deg":
                raise RecordingFormatError(p, f"unknown unit {unit!r} for channel {label!r}", n)
            self.spanish |= label.upper() != name
            self._add(name, unit, count)
        elif _DIGITAL.match(line):
            self.digital = True
            self._add("", "", 0)
        else:
            raise RecordingFormatError(p, f"unrecognised UCI header line {line[:80]!r}", n)

    def _add(self, name: str, unit: str, count: int) -> None:
        self.names.append(name)
        self.units.append(unit)
        self.declared.append(count)


class _Body:
    """EMG is the timeline: rows with every EMG cell filled are samples. After the last one
    only FX-only rows (goniometer ran on) and empty rows may follow; both are dropped."""

    def __init__(
        self,
        p: Path,
        names: list[str],
        emg: list[int],
        fx: int | None,
        digital: bool,
        warnings: list[str],
    ) -> None:
        self.p, self.names, self.emg, self.fx, self.digital = p, names, emg, fx, digital
        self.warnings = warnings
        self.n_rows = 0
        self.bad = BadRows(p)
        self.first_trailing: int | None = None
        self.trailing: list[tuple[int, list[str]]] = []  # rows after the last EMG row, so far
        self.n_fx_only = self.n_empty = 0
        self.missing_fx: int | None = None  # a row without FX: allowed only as the very last row
        self.last_fx = ""
        self.seen_digital: set[str] = set()

    def rows(self, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
        ncol, fx, digital, seen = len(self.names), self.fx, self.digital, self.seen_digital
        di = self.names.index("") if digital else -1
        plain = True  # nothing pending: the usual row may take the short way
        last: list[str] | None = None  # the newest usual row, whose FX is the one to hold
        for n, ln in lines:
            cells = ln.split("\t")
            # Tab-split cells that equal the whitespace-split words hold nothing to strip.
            if cells != ln.split():
                cells = [c.strip() for c in cells]
            # The usual row, every cell filled and nothing pending: what `_other` does with it,
            # without its tests (the parser's time is mostly per row).
            if plain and len(cells) == ncol and all(cells):
                if digital and len(seen) <= 5:
                    seen.add(cells[di])
                last = cells
                self.n_rows += 1
                yield n, cells
                continue
            if last is not None and fx is not None:
                self.last_fx = last[fx]
            last = None
            yield from self._other(n, cells)
            plain = self.first_trailing is None and self.missing_fx is None
        if last is not None and fx is not None:
            self.last_fx = last[fx]
        self._ended()

    def _other(self, n: int, cells: list[str]) -> Iterator[tuple[int, list[str]]]:
        """A row that is not the usual one: short, with empty cells, or after such rows."""
        p, ncol, emg = self.p, len(self.names), self.emg
        if len(cells) > ncol:
            if any(cells[ncol:]):
                reason = f"{len(cells)} columns, the header declares {ncol}"
                raise RecordingFormatError(p, reason, n)
            del cells[ncol:]  # trailing tabs: kept, the row was longer than its names
        cells += [""] * (ncol - len(cells))
        filled = [bool(cells[i]) for i in emg]
        if all(filled) or (any(filled) and self.n_rows):
            if self.first_trailing is not None or self.missing_fx is not None:
                yield from self._resumed(n)
            self._hold_fx(n, cells, all(filled))
            if self.digital and len(self.seen_digital) <= 5:
                self.seen_digital.add(cells[self.names.index("")])
            self.n_rows += 1
            yield n, cells
        elif any(filled):  # before any data row: no value to hold
            gone = ", ".join(self.names[i] for i, f in zip(emg, filled, strict=True) if not f)
            raise RecordingFormatError(p, f"missing {gone} value in a data row", n)
        else:
            self._trail(n, cells)

    def _resumed(self, n: int) -> Iterator[tuple[int, list[str]]]:
        """EMG resumes after rows without it (they were inside the data: bad rows, held), or
        after a row without FX (which was not the last, then)."""
        if self.first_trailing is not None and len(self.trailing) >= BATCH_ROWS:
            reason = (
                f"{BATCH_ROWS} or more rows without EMG values inside the recording "
                f"(EMG resumes at line {n}): too many to hold"
            )
            raise RecordingFormatError(self.p, reason, self.first_trailing)
        for m, old in self.trailing:
            self.n_rows += 1
            yield m, old
        self.first_trailing, self.trailing, self.n_fx_only, self.n_empty = None, [], 0, 0
        if self.missing_fx is not None:  # held at the previous FX, but it was not the last
            self.bad.add(RecordingFormatError(self.p, "FX value empty", self.missing_fx))
            self.missing_fx = None

    def _hold_fx(self, n: int, cells: list[str], all_emg: bool) -> None:
        fx = self.fx
        if fx is None:
            return
        if not cells[fx] and all_emg:
            if not self.n_rows:  # only the last row is a known export quirk
                raise RecordingFormatError(self.p, "missing FX value in a data row", n)
            self.missing_fx = n
            cells[fx] = self.last_fx
        self.last_fx = cells[fx] or self.last_fx

    def _trail(self, n: int, cells: list[str]) -> None:
        """A row without EMG: after the last sample, or inside the data if EMG resumes."""
        fx = self.fx
        self.first_trailing = self.first_trailing or n
        if len(self.trailing) < BATCH_ROWS:  # beyond: a long tail, not held in memory
            self.trailing.append((n, cells))
        if fx is not None and cells[fx]:
            self.n_fx_only += 1
            if not is_number(cells[fx]):
                self.warnings.append(
                    f"line {n}: non-numeric FX cell {cells[fx][:40]!r} in a trailing "
                    "FX-only row, ignored"
                )
        else:
            self.n_empty += 1

    def _ended(self) -> None:
        w = self.warnings
        if self.n_fx_only:
            w.append(f"dropped {self.n_fx_only} trailing FX-only rows (EMG is the timeline)")
        if self.n_empty:
            w.append(f"dropped {self.n_empty} trailing empty row(s)")
        if self.missing_fx is not None:
            w.append(
                f"line {self.missing_fx}: last EMG row has no FX value; repeated the previous "
                f"one ({self.last_fx})"
            )
        if self.digital:
            seen = sorted(self.seen_digital)
            w.append(
                f"ignored the 'Digitals combined' event column (8-line header variant; values: "
                f"{', '.join(seen[:5])}{', ...' if len(seen) > 5 else ''})"
            )
