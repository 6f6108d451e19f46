"""Repair an EDF/EDF+/BDF file left by a crashed recorder: `python -m feedback.outputs.repair FILE`.

Before the crash-safe writer (`feedback.outputs.edf_writer`), recordings were written with
pyedflib, which leaves "-1" in the header's record count until the file is closed; a station
killed mid-session left a file that no reader opens, although its whole data records are intact.
A kill may also leave part of a record at the end. This command sets the record count to the
number of whole records in the file and cuts the partial one off. The original is kept as
FILE.bak unless --no-backup is given. Events that edflib held in memory at the crash are not in
the file and cannot be recovered (the CSV events file of a recording made with this version has
them all).

Exit status: 0 repaired or nothing to repair, 2 not an EDF/BDF file this command understands.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

COUNT_OFFSET, COUNT_WIDTH = 236, 8
_SIGNAL_HEADER_BEFORE_SPR = 16 + 80 + 8 + 8 + 8 + 8 + 8 + 80  # label .. prefilter


class NotRepairable(ValueError):
    """The file is not an EDF/BDF file with a readable fixed header."""


@dataclass(frozen=True, slots=True)
class Layout:
    header_bytes: int
    record_bytes: int
    count_in_header: int | None  # None: the field is not a number
    whole_records: int
    trailing_bytes: int  # part of a record after the last whole one

    @property
    def healthy(self) -> bool:
        return self.count_in_header == self.whole_records and not self.trailing_bytes


def _field(raw: bytes, start: int, width: int, what: str) -> int:
    text = raw[start : start + width].decode("ascii", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise NotRepairable(f"header field {what!r} is {text!r}, not a whole number") from None


def inspect(path: Path) -> Layout:
    size = path.stat().st_size
    with path.open("rb") as f:
        fixed = f.read(256)
        if len(fixed) < 256:
            raise NotRepairable(f"{size} bytes: shorter than an EDF header (256 bytes)")
        if fixed.startswith(b"0       "):
            sample_bytes = 2
        elif fixed.startswith(b"\xffBIOSEMI"):
            sample_bytes = 3
        else:
            raise NotRepairable("does not start like an EDF ('0') or BDF (0xFF BIOSEMI) file")
        header_bytes = _field(fixed, 184, 8, "bytes in header")
        signals = _field(fixed, 252, 4, "number of signals")
        if signals < 1 or header_bytes != 256 * (signals + 1) or size < header_bytes:
            raise NotRepairable(
                f"header says {signals} signals and {header_bytes} header bytes; "
                f"the file has {size} bytes"
            )
        signal_headers = f.read(header_bytes - 256)
    spr_at = signals * _SIGNAL_HEADER_BEFORE_SPR
    per_record = [
        _field(signal_headers, spr_at + 8 * i, 8, f"samples per record of signal {i + 1}")
        for i in range(signals)
    ]
    record_bytes = sample_bytes * sum(per_record)
    if record_bytes <= 0:
        raise NotRepairable("the header gives data records of 0 bytes")
    try:
        count: int | None = _field(fixed, COUNT_OFFSET, COUNT_WIDTH, "number of data records")
    except NotRepairable:
        count = None
    whole, trailing = divmod(size - header_bytes, record_bytes)
    return Layout(header_bytes, record_bytes, count, whole, trailing)


def repair(path: Path, *, backup: bool = True) -> str:
    """Make the header count match the whole records and drop a partial one; say what was done."""
    layout = inspect(path)
    if layout.healthy:
        return f"{path}: {layout.whole_records} whole data records; nothing to repair"
    if layout.whole_records == 0:
        raise NotRepairable("no whole data record in the file: nothing to keep")
    if backup:
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    with path.open("r+b") as f:
        f.truncate(layout.header_bytes + layout.whole_records * layout.record_bytes)
        f.seek(COUNT_OFFSET)
        f.write(str(layout.whole_records).ljust(COUNT_WIDTH).encode("ascii"))
        f.flush()
        os.fsync(f.fileno())
    was = "not a number" if layout.count_in_header is None else str(layout.count_in_header)
    cut = f"; cut {layout.trailing_bytes} bytes of a partial record" * bool(layout.trailing_bytes)
    return f"{path}: record count set to {layout.whole_records} (was {was}){cut}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feedback.outputs.repair",
        description="Repair EDF/EDF+/BDF files left by a crashed recorder (record count, "
        "partial last record).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--no-backup", action="store_true", help="do not keep FILE.bak")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            print(repair(path, backup=not args.no_backup))
        except (NotRepairable, OSError) as exc:
            print(f"{path}: cannot repair: {exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
