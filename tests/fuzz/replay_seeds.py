"""Seed files for fuzzing the replay readers: one small valid file per format, made on the spot
(the EDF+ by the station's own writer), shared by the hypothesis tests and the atheris harness."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np

from devices.recording_formats import RecordingFormatError, load_recording

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def uci_seed() -> bytes:
    with gzip.open(DATA / "1Nmar.txt.gz", "rb") as fh:
        lines = fh.read().split(b"\r\n")
    return b"\r\n".join(lines[:40]) + b"\r\n"


def santuz_seed() -> bytes:
    with gzip.open(DATA / "ID0012_TW_01_emg.csv.gz", "rb") as fh:
        lines = fh.read().split(b"\n")
    return b"\n".join(lines[:30]) + b"\n"


def csv_seed() -> bytes:
    rows = "".join(f"{i / 1000:.3f},{np.sin(i / 3):.4f},{np.cos(i / 5):.4f}\n" for i in range(30))
    return ("time,VM,VL\n" + rows).encode()


def record_csv_seed() -> bytes:
    """The shape of feedback.outputs.recorder's samples CSV."""
    head = "index,t_s,VM_mV,VM_env_mV,VM_pct_mvc,VM_active,VM_quality,zone\n"
    rows = "".join(f"{i},{i / 2000:.4f},{np.sin(i):.6g},0.01,5,0,0,1\n" for i in range(30))
    return (head + rows).encode()


def edf_seed() -> bytes:
    from feedback.outputs.edf_writer import EdfPlusWriter, SignalSpec

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.edf"
        w = EdfPlusWriter(
            path,
            [SignalSpec("VM", "mV", -16.384, 16.384), SignalSpec("VM active", "", 0, 1, 0, 1)],
            rate_hz=20,
            patient_code="P-0001",
            equipment="vm-feedback",
            annotation_bytes=64,
            fsync=False,
        )
        for k in range(3):
            w.annotate(k + 0.5, f"onset VM {k}")
            w.write_record(np.vstack([np.linspace(-1, 1, 20), np.arange(20) % 2]))
        w.close()
        return path.read_bytes()


def xdf_seed() -> bytes:
    """An EMG stream and a marker stream, as LabRecorder lays them out (tests/devices)."""
    from tests.devices.xdf_writer import XdfStream, write_xdf

    t = np.arange(30) / 100.0
    emg = np.vstack([np.sin(np.arange(30) / 3), np.cos(np.arange(30) / 5)]).T * 100
    streams = [
        XdfStream("emg", "EMG", 100.0, ("VM", "VL"), ("microvolts", ""), emg, stamps=t),
        XdfStream("cues", "Markers", 0.0, markers=["work", "rest"], stamps=t[[5, 20]]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.xdf"
        write_xdf(path, streams)
        return path.read_bytes()


def xdf_built(
    count: str, rate: str, fmt: str, rows: int, claimed: int | None, marker_count: str = "1"
) -> bytes:
    """An XDF file with the given header fields and a samples chunk claiming `claimed` samples
    (default: the `rows` there are), plus a marker stream: lengths always consistent, so that
    the hostile values reach pyxdf's allocations and the reader's checks."""
    import struct

    from tests.devices.xdf_writer import _chunk, _varlen

    def header(sid: int, name: str, n: str, srate: str, form: str) -> bytes:
        xml = (
            f'<?xml version="1.0"?><info><name>{name}</name><type>EMG</type><channel_count>{n}'
            f"</channel_count><nominal_srate>{srate}</nominal_srate><channel_format>{form}"
            "</channel_format><desc><channels><channel><label>VM</label><unit>microvolts</unit>"
            "</channel></channels></desc></info>"
        )
        return _chunk(2, struct.pack("<I", sid) + xml.encode())

    body = b"".join(
        b"\x08" + struct.pack("<d", i / 100) + struct.pack("<2f", i, -i) for i in range(rows)
    )
    n = rows if claimed is None else claimed
    mark = b"\x08" + struct.pack("<d", 0.05) + _varlen(4) + b"work"
    return b"".join([
        b"XDF:",
        _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>'),
        header(1, "emg", count, rate, fmt),
        header(2, "cues", marker_count, "0", "string"),
        _chunk(3, struct.pack("<I", 1) + _varlen(n) + body),
        _chunk(3, struct.pack("<I", 2) + _varlen(1) + mark),
    ])  # fmt: skip


SEEDS = {
    "uci": uci_seed,
    "santuz": santuz_seed,
    "csv": csv_seed,
    "record_csv": record_csv_seed,
    "edf": edf_seed,
    "xdf": xdf_seed,
}
FORMAT_OF = {"uci": "uci", "santuz": "santuz", "csv": "csv", "record_csv": "csv", "edf": "edf",
             "xdf": "xdf"}  # fmt: skip


def read_or_refuse(path: Path, fmt: str | None) -> None:
    """The only acceptable outcomes: a Recording, or a RecordingFormatError that says where."""
    try:
        rec = load_recording(path, fmt=fmt)
    except RecordingFormatError as exc:
        assert exc.reason and str(exc).startswith(str(path)), str(exc)
        return
    assert np.isfinite(rec.data).all() and (np.abs(rec.data) <= 1e6).all()
    assert rec.rate_hz > 0 and rec.data.shape[0] == len(rec.channels)
