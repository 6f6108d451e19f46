"""The text parser's fast paths give what the line-by-line paths give (issue 12: replay speed).

- TextLines decodes a piece's lines in one call when they are all UTF-8: the same lines, with
  the same Latin-1 fallback and BOM handling, however the file is cut into pieces;
- the UCI reader takes a row as its tab-split cells without stripping each when they are its
  whitespace-split words: a row with whitespace cells still reads as the stripped path reads it.
"""

from __future__ import annotations

import codecs
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devices.formats import source
from devices.formats.source import TextLines
from devices.recording_formats import load_recording
from tests.devices.test_recording_formats import uci_text


def expected_lines(data: bytes) -> list[tuple[int, str]]:
    """Each line decoded on its own: UTF-8, else Latin-1; a BOM dropped from line 1."""
    *lines, last = source._NEWLINE.split(data)
    if last:
        lines.append(last)
    out = []
    for n, raw in enumerate(lines, 1):
        if n == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            out.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError:
            out.append((n, raw.decode("latin-1")))
    return out


def random_text(rng: random.Random) -> bytes:
    words = ["0.123", "-4.5\t6", "µV", "é", "€", "\t", " ", "\xa0", "x"]
    newlines = [b"\n", b"\r\n", b"\r"]
    parts = [codecs.BOM_UTF8] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 400)):
        line = "".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        enc = "latin-1" if rng.random() < 0.05 and "€" not in line else "utf-8"
        parts.append(line.encode(enc) + rng.choice(newlines))
    if rng.random() < 0.5:
        parts.append(b"tail without newline")
    return b"".join(parts)


def lines_of(path: Path, piece: int, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    monkeypatch.setattr(source, "READ_BYTES", piece)
    return list(TextLines(path, []))


def mismatches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: int) -> int:
    rng = random.Random(4)
    bad = 0
    for i in range(cases):
        data = random_text(rng)
        path = tmp_path / f"t{i}.txt"
        path.write_bytes(data)
        for piece in (7, 64, 1000, 1 << 20):
            bad += lines_of(path, piece, monkeypatch) != expected_lines(data)
    return bad


def test_lines_decoded_piece_by_piece_equal_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mismatches(tmp_path, monkeypatch, 150) == 0


def test_the_line_check_catches_a_piece_decoded_leniently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lenient(self: TextLines, n: int, parts: list[bytes]) -> Iterator[tuple[int, str]]:
        texts = b"\n".join(parts).decode("utf-8", errors="replace").split("\n")
        yield from zip(range(n + 1, n + 1 + len(parts)), texts, strict=True)

    monkeypatch.setattr(TextLines, "_decoded", lenient)
    assert mismatches(tmp_path, monkeypatch, 30) > 0


def test_a_latin1_line_far_into_a_file_still_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    path.write_bytes(b"a\n" * 5000 + "µV\n".encode("latin-1") + b"b\n")
    warnings: list[str] = []
    lines = list(TextLines(path, warnings))
    assert lines[5000] == (5001, "µV") and len(lines) == 5002
    assert warnings == ["not valid UTF-8; decoded as Latin-1"]


@pytest.mark.parametrize("blank", ["\xa0", " ", "\x0b", "\xa0 "])
def test_a_uci_whitespace_cell_reads_as_an_empty_one(tmp_path: Path, blank: str) -> None:
    """The fast row path must not take a row with a whitespace-only cell as a filled one: the
    cell is empty once stripped, and held as an empty cell (the warning says "empty")."""
    text = uci_text("4Nsen", 30).split("\r\n")

    def read(cell: str) -> tuple[np.ndarray, tuple[str, ...]]:
        rows = list(text)
        cells = rows[19].split("\t")
        cells[2] = cell
        rows[19] = "\t".join(cells)
        path = tmp_path / "cell.txt"
        path.write_bytes("\r\n".join(rows).encode("utf-8"))
        rec = load_recording(path)
        return rec.data, rec.warnings

    want_data, want_warnings = read("")
    data, warnings = read(blank)
    np.testing.assert_array_equal(data, want_data)
    assert warnings == want_warnings
    assert any("VM value empty" in w for w in warnings)


def test_uci_cells_padded_with_spaces_read_as_the_bare_cells(tmp_path: Path) -> None:
    text = uci_text("4Nsen", 30).split("\r\n")
    padded = [*text[:7], *("\t".join(f" {c}\xa0" for c in r.split("\t")) for r in text[7:37])]
    paths = []
    for name, rows in (("bare", text), ("padded", [*padded, *text[37:]])):
        path = tmp_path / f"{name}.txt"
        path.write_bytes("\r\n".join(rows).encode("utf-8"))
        paths.append(path)
    bare, pad = (load_recording(p) for p in paths)
    np.testing.assert_array_equal(pad.data, bare.data)
    assert pad.n_samples == 30


def _cells(rng: np.random.Generator, n: int) -> list[list[str]]:
    values = rng.standard_normal((n, 5)) * 10.0 ** rng.integers(-8, 8, (n, 5))
    fmt = ["{:.6f}", "{!r}", "{:.17g}", "{:e}", " {:.3f} "]
    return [[fmt[c].format(float(v)) for c, v in enumerate(row)] for row in values]


def test_to_float_gives_numpys_own_conversion() -> None:
    """Python's float per cell, then one array: the numbers numpy's string cast gives."""
    from devices.formats.base import to_float

    rows = _cells(np.random.default_rng(9), 5000)
    got = to_float(Path("x"), rows, list(range(5000)), list("ABCDE"), "")
    want = np.array(rows, dtype=np.float64)
    assert got.dtype == np.float64 and np.array_equal(got, want)
    # Negative control: a conversion that rounds differently (through float32) is noticed.
    assert not np.array_equal(np.array(rows, dtype=np.float32).astype(np.float64), want)
