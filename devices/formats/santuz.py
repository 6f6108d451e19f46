"""musclesyneRgies walking CSV (`time,ME,MA,...`): EMG assumed µV, gait events from the sibling
`*_cycles.csv` as annotations."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from devices.formats.base import Annotation, RecordingFormatError, RecordingStream
from devices.formats.generic_csv import open_csv
from devices.formats.source import TextLines

HEADER = (
    "time", "ME", "MA", "FL", "RF", "VM", "VL", "ST", "BF", "TA", "PL", "GM", "GL", "SO"
)  # fmt: skip
MAX_EVENTS = 100_000  # gait events in one cycles file; far more is not a walking trial


def is_santuz_header(line: str) -> bool:
    return tuple(c.strip() for c in line.split(",")) == HEADER


def open_santuz(
    p: Path,
    lines: Iterable[tuple[int, str]],
    warnings: list[str],
    rate_hz: float | None,
    units: str | None,
) -> RecordingStream:
    if units is None:
        warnings.append(
            "EMG units are not stated in the file; assumed µV as the dataset README argues "
            "(RMS 18-76, quantisation step 0.100708) and converted to mV"
        )
    events = _cycles(p, warnings)

    def outside(t0: float, t_end: float) -> None:
        if n := sum(1 for a in events if not t0 <= a.onset_s <= t_end):
            warnings.append(f"{n} gait event(s) lie outside the EMG time span")

    return open_csv(
        p,
        lines,
        warnings,
        rate_hz,
        units,
        kind="santuz walking CSV",
        default_units="uV",
        annotations_of=lambda: events,
        end_check=outside,
    )


def _cycles(p: Path, warnings: list[str]) -> tuple[Annotation, ...]:
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
    events: list[Annotation] = []
    header_seen = False
    for n, ln in TextLines(cp, warnings):
        if not header_seen:
            if [c.strip() for c in ln.split(",")] != ["touchdown_s", "liftoff_s"]:
                raise RecordingFormatError(cp, "expected the header 'touchdown_s,liftoff_s'", 1)
            header_seen = True
            continue
        if not ln.strip():
            continue
        cells = [c.strip() for c in ln.split(",")]
        try:
            td, lo = (float(c) for c in cells)
        except ValueError:
            raise RecordingFormatError(
                cp, f"expected two times in seconds, got {ln[:80]!r}", n
            ) from None
        events += [Annotation(td, 0.0, "touchdown"), Annotation(lo, 0.0, "liftoff")]
        if len(events) > MAX_EVENTS:
            raise RecordingFormatError(cp, f"more than {MAX_EVENTS // 2} gait cycles", n)
    if not header_seen:
        raise RecordingFormatError(cp, "expected the header 'touchdown_s,liftoff_s'", 1)
    return tuple(sorted(events))
