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


SEEDS = {
    "uci": uci_seed,
    "santuz": santuz_seed,
    "csv": csv_seed,
    "record_csv": record_csv_seed,
    "edf": edf_seed,
}
FORMAT_OF = {"uci": "uci", "santuz": "santuz", "csv": "csv", "record_csv": "csv", "edf": "edf"}


def read_or_refuse(path: Path, fmt: str | None) -> None:
    """The only acceptable outcomes: a Recording, or a RecordingFormatError that says where."""
    try:
        rec = load_recording(path, fmt=fmt)
    except RecordingFormatError as exc:
        assert exc.reason and str(exc).startswith(str(path)), str(exc)
        return
    assert np.isfinite(rec.data).all() and (np.abs(rec.data) <= 1e6).all()
    assert rec.rate_hz > 0 and rec.data.shape[0] == len(rec.channels)
