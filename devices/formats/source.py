"""Bytes and lines of a recording file, read in bounded pieces.

Nothing here holds a whole file: bytes come in `READ_BYTES` pieces, gzip is inflated piece by
piece with limits on the output, and lines longer than `MAX_LINE_BYTES` are refused, so a hostile
or broken file gives a `RecordingFormatError` instead of eating the memory (issue 11: a 10 MB gzip
bomb reached 7.4 GB before it failed; a 2 GB file took 2.2 GB).
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from devices.formats.base import RecordingFormatError

READ_BYTES = 1 << 20
MAX_LINE_BYTES = 128 * 1024  # a recording's line is a few hundred bytes; 128 KiB is not text
# Deflate can shrink at most ~1032:1; text recordings shrink 3-10:1. A ratio beyond this, once a
# few MB are out, is a bomb (or a file of nothing but one repeated byte): stop before it grows.
MAX_GZIP_RATIO = 200
GZIP_RATIO_AFTER = 4 << 20
MAX_INFLATED_BYTES = 64 << 30
_NEWLINE = re.compile(rb"\r\n|\r|\n")
_TEXT_NEWLINE = re.compile(r"\r\n|\r|\n")
CHECKED_LINES = 2000  # lines checked for control characters (binary data)


def byte_chunks(p: Path) -> Generator[bytes]:
    """The file's content in pieces, gunzipped when it starts with the gzip magic."""
    with p.open("rb") as f:
        first = f.read(max(READ_BYTES, 2))
        if first[:2] != b"\x1f\x8b":  # content decides, not the extension
            while first:
                yield first
                first = f.read(max(READ_BYTES, 2))
            return
        yield from _gunzip(p, first, f.read)


def _gunzip(p: Path, first: bytes, read: Callable[[int], bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj(wbits=31)
    consumed = inflated = 0  # compressed bytes taken by the inflater, bytes out
    pending = first
    try:
        while True:
            if not pending:
                pending = read(READ_BYTES)
                if not pending:
                    break
                if inflater.eof:  # the next gzip member starts exactly at a piece boundary
                    inflater = zlib.decompressobj(wbits=31)
            data = inflater.decompress(pending, READ_BYTES)
            rest = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            consumed += len(pending) - len(rest)
            pending = rest
            if inflater.eof and pending:  # concatenated .gz files: another member follows
                inflater = zlib.decompressobj(wbits=31)
            inflated += len(data)
            if inflated > GZIP_RATIO_AFTER and inflated > MAX_GZIP_RATIO * consumed:
                raise RecordingFormatError(
                    p,
                    f"gzip data inflates more than {MAX_GZIP_RATIO}:1 ({consumed} bytes gave "
                    f"{inflated}): a decompression bomb, not a recording",
                )
            if inflated > MAX_INFLATED_BYTES:
                raise RecordingFormatError(
                    p, f"gzip data inflates beyond {MAX_INFLATED_BYTES >> 30} GiB"
                )
            if data:
                yield data
        if not inflater.eof:
            raise RecordingFormatError(p, "corrupt or truncated gzip data (ends mid-stream)")
    except zlib.error as exc:
        raise RecordingFormatError(p, f"corrupt or truncated gzip data ({exc})") from None


class TextLines:
    """Numbered text lines of a recording (1-based), with universal newlines, UTF-8 falling back
    to Latin-1, UTF-16 with a byte-order mark, and the binary-data checks. Iterate once."""

    def __init__(self, p: Path, warnings: list[str]) -> None:
        self.path = p
        self.warnings = warnings
        self.gzipped = False
        self._chunks: Generator[bytes] = byte_chunks(p)
        self.head = b""
        for piece in self._chunks:  # enough to sniff: the first 64 KiB or the whole file
            self.head += piece
            if len(self.head) >= 65536:
                break
        with p.open("rb") as f:
            self.gzipped = f.read(2) == b"\x1f\x8b"

    def close(self) -> None:
        """Close the file now rather than when the reader is collected."""
        self._chunks.close()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        if self.head.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel "Unicode text" exports
            self.warnings.append("decoded as UTF-16 (byte-order mark)")
            lines = self._utf16_lines()
        else:
            nul = self.head.find(b"\x00", 0, 65536)
            if nul >= 0:
                raise RecordingFormatError(
                    self.path,
                    f"binary data (byte 0x00 at offset {nul}): not a text recording, or a text "
                    "encoding other than UTF-8/Latin-1 without a byte-order mark",
                    self.head.count(b"\n", 0, nul) + 1,
                )
            lines = self._byte_lines()
        for n, text in lines:
            ctrl = sum(
                1 for ch in text if (ord(ch) < 32 and ch not in "\t\f") or 0x7F <= ord(ch) < 0xA0
            )
            if ctrl > max(2, len(text) // 100):
                raise RecordingFormatError(
                    self.path, "binary data (control characters): not a text recording", n
                )
            yield n, text
            if n >= CHECKED_LINES:
                break
        yield from lines  # the rest unchecked: no generator step of ours per line

    def _pieces(self) -> Iterator[bytes]:
        if self.head:
            yield self.head
        yield from self._chunks

    def _too_long(self, n: int, size: int) -> RecordingFormatError:
        return RecordingFormatError(
            self.path,
            f"line longer than {MAX_LINE_BYTES // 1024} KiB (no line break in {size} bytes): "
            "not a text recording",
            n,
        )

    def _byte_lines(self) -> Iterator[tuple[int, str]]:
        n = 0
        buf = b""
        for piece in self._pieces():
            buf += piece
            # A trailing CR may be the first half of a CRLF cut between pieces: hold it back.
            held = b"\r" if buf.endswith(b"\r") else b""
            parts = _NEWLINE.split(buf[: len(buf) - len(held)])
            buf = parts.pop() + held
            yield from self._decoded(n, parts)
            n += len(parts)
            if len(buf) > MAX_LINE_BYTES:
                raise self._too_long(n + 1, len(buf))
        *ended, last = _NEWLINE.split(buf)
        for raw in ended:
            n += 1
            yield n, self._decode(n, raw)
        if last:  # text after the final newline is a line; the newline does not start one
            yield n + 1, self._decode(n + 1, last)

    def _decoded(self, n: int, parts: list[bytes]) -> Iterator[tuple[int, str]]:
        """Lines n + 1, n + 2, ... decoded. A piece's lines are decoded in one call when they
        are all valid UTF-8 (and not too long, and not the first line, which may carry a BOM):
        UTF-8 never puts a line-break byte inside a character, so the joined lines decode to
        the same text as one by one. Otherwise line by line, as `_decode` says."""
        if n == 0 and parts:
            yield 1, self._decode(1, parts[0])
            n, parts = 1, parts[1:]
        if parts and max(map(len, parts)) <= MAX_LINE_BYTES:
            try:
                texts = b"\n".join(parts).decode("utf-8").split("\n")
            except UnicodeDecodeError:
                pass
            else:
                yield from zip(range(n + 1, n + 1 + len(parts)), texts, strict=True)
                return
        for m, raw in enumerate(parts, n + 1):
            yield m, self._decode(m, raw)

    def _decode(self, n: int, raw: bytes) -> str:
        if len(raw) > MAX_LINE_BYTES:
            raise self._too_long(n, len(raw))
        if n == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Latin-1 never fails: the UCI files declare it, and old exports write "µV" in it.
            if "not valid UTF-8; decoded as Latin-1" not in self.warnings:
                self.warnings.append("not valid UTF-8; decoded as Latin-1")
            return raw.decode("latin-1")

    def _utf16_lines(self) -> Iterator[tuple[int, str]]:
        decoder = codecs.getincrementaldecoder("utf-16")(errors="replace")
        n = 0
        buf = ""
        for piece in self._pieces():
            buf += decoder.decode(piece)
            held = "\r" if buf.endswith("\r") else ""
            parts = _TEXT_NEWLINE.split(buf[: len(buf) - len(held)])
            buf = parts.pop() + held
            for text in parts:
                n += 1
                yield n, text
            if 2 * len(buf) > MAX_LINE_BYTES:
                raise self._too_long(n + 1, 2 * len(buf))
        buf += decoder.decode(b"", final=True)
        *ended, last = _TEXT_NEWLINE.split(buf)
        for text in ended:
            n += 1
            yield n, text
        if last:
            yield n + 1, last
