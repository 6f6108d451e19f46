"""A minimal XDF 1.0 writer for tests (the format: github.com/sccn/xdf/wiki/Specifications), for
files larger and better described than the real LabRecorder example (tests/fixtures/xdf). pyxdf
reads what it writes; the tests check that before relying on it."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class XdfStream:
    name: str
    kind: str
    rate_hz: float  # 0: irregular (markers)
    labels: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    data: np.ndarray | None = None  # (samples, channels) float32
    markers: list[str] = field(default_factory=list)
    stamps: np.ndarray | None = None  # seconds, one per sample


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return b"\x08" + struct.pack("<Q", len(body)) + body


def _varlen(n: int) -> bytes:
    return b"\x08" + struct.pack("<Q", n)


def _header(s: XdfStream) -> str:
    fmt = "string" if s.data is None else "float32"
    n = 1 if s.data is None else s.data.shape[1]
    chans = "".join(
        f"<channel><label>{lb}</label><unit>{u}</unit><type>EMG</type></channel>"
        for lb, u in zip(s.labels, s.units, strict=True)
    )
    return (
        f'<?xml version="1.0"?><info><name>{s.name}</name><type>{s.kind}</type>'
        f"<channel_count>{n}</channel_count><nominal_srate>{s.rate_hz}</nominal_srate>"
        f"<channel_format>{fmt}</channel_format><created_at>0</created_at>"
        f"<desc><channels>{chans}</channels></desc></info>"
    )


def write_xdf(path: Path, streams: list[XdfStream]) -> None:
    out = [b"XDF:", _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')]
    for sid, s in enumerate(streams, start=1):
        out.append(_chunk(2, struct.pack("<I", sid) + _header(s).encode()))
    for sid, s in enumerate(streams, start=1):
        assert s.stamps is not None
        rows: list[bytes] = []
        if s.data is not None:
            for t, row in zip(s.stamps, s.data.astype("<f4"), strict=True):
                rows.append(b"\x08" + struct.pack("<d", t) + row.tobytes())
        else:
            for t, text in zip(s.stamps, s.markers, strict=True):
                raw = text.encode()
                rows.append(b"\x08" + struct.pack("<d", t) + _varlen(len(raw)) + raw)
        for start in range(0, len(rows), 1000):  # LabRecorder writes a chunk per pull
            part = rows[start : start + 1000]
            out.append(_chunk(3, struct.pack("<I", sid) + _varlen(len(part)) + b"".join(part)))
        footer = (
            f'<?xml version="1.0"?><info><first_timestamp>{s.stamps[0]}</first_timestamp>'
            f"<last_timestamp>{s.stamps[-1]}</last_timestamp>"
            f"<sample_count>{len(s.stamps)}</sample_count></info>"
        )
        out.append(_chunk(6, struct.pack("<I", sid) + footer.encode()))
    path.write_bytes(b"".join(out))
