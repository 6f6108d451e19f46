"""Refresh the byte examples in docs/protocol.md from the code: `python -m firmware_bridge._docgen`.

Each ```hex block in the doc names a message (`; value: ...`) and who sends it (`; from: ...`);
this rewrites the `frame:` and `wire:` lines below them with what the codec produces today.
tests/firmware_bridge/test_fb_protocol_doc.py checks the reverse direction (doc bytes decode
to the stated values), so a stale doc fails the tests.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from cobs import cobs

import firmware_bridge

from .codec import encode_body
from .frames import Message
from .framing import encode_frame

DOC_SEQ = 5  # every example uses seq 5, so the little-endian u16 reads "05 00"
BYTES_PER_LINE = 16
_BLOCK = re.compile(r"```hex\n(.*?)```", re.DOTALL)


def _hex_lines(label: str, groups: list[bytes]) -> list[str]:
    """`label: aa bb | cc ...`, wrapped at BYTES_PER_LINE bytes with aligned continuations."""
    tokens: list[str] = []
    for i, group in enumerate(groups):
        if i and group:
            tokens.append("|")
        tokens += [f"{b:02x}" for b in group]
    lines, count, current = [], 0, []
    for tok in tokens:
        current.append(tok)
        count += tok != "|"
        if count == BYTES_PER_LINE:
            lines.append(current)
            current, count = [], 0
    if current:
        lines.append(current)
    pad = " " * 7
    return [(f"{label + ':':<7}" if i == 0 else pad) + " ".join(ln) for i, ln in enumerate(lines)]


def render_block(value_expr: str, sender: str) -> str:
    namespace = {name: getattr(firmware_bridge, name) for name in firmware_bridge.__all__}
    message: Message = eval(value_expr, {"np": np, **namespace})  # our own doc, trusted
    msg_type, body = encode_body(message)
    wire = encode_frame(msg_type, DOC_SEQ, body)
    frame = bytes(cobs.decode(wire[:-1]))
    header, crc = frame[:4], frame[-2:]
    lines = [f"; value: {value_expr}", f"; from: {sender}"]
    lines += _hex_lines("frame", [header, body, crc])
    lines += _hex_lines("wire", [wire])
    return "\n".join(lines) + "\n"


def refresh(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        meta = dict(
            line[2:].split(": ", 1) for line in match.group(1).splitlines() if line.startswith("; ")
        )
        return "```hex\n" + render_block(meta["value"], meta["from"]) + "```"

    return _BLOCK.sub(replace, text)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "docs/protocol.md")
    path.write_text(refresh(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
