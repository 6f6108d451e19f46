"""The processed record, written by a real session run and read back with pyedflib and csv."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from devices.recording_formats import load_recording

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "data"


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_feedback.py"),
            "--headless",
            "--db",
            str(tmp_path / "s.db"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_replay_recorded_as_edf_and_csv_keeps_every_sample_and_event(tmp_path: Path) -> None:
    source = DATA / "4Nsen.txt.gz"
    run_cli(
        tmp_path,
        "--device",
        f"replay:{source}?speed=max&channels=VM=VM,VL=VL,BF=BF",
        "--record",
        str(tmp_path / "rec"),
    )
    rec = load_recording(source)
    vm = rec.data[rec.channels.index("VM")]
    n = rec.n_samples
    # CSV: one row per sample, raw values as replayed.
    with (tmp_path / "rec.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    np.testing.assert_allclose([float(r["VM_mV"]) for r in rows], vm, atol=1e-6)
    assert {r["VM_active"] for r in rows} == {"0", "1"}
    with (tmp_path / "rec.events.csv").open() as f:
        events = list(csv.DictReader(f))
    kinds = {e["kind"] for e in events}
    assert {"onset", "offset", "contraction", "cue"} <= kinds
    # EDF+: whole 1 s records (padded at the end), same samples to EDF resolution.
    with pyedflib.EdfReader(str(tmp_path / "rec.edf")) as edf:
        labels = edf.getSignalLabels()
        assert labels[:2] == ["VM", "BF"] and "VM env" in labels and "zone" in labels
        assert edf.getSampleFrequency(0) == 1000
        raw = edf.readSignal(0)
        assert raw.shape[0] == 16 * 1000  # 15.601 s → 16 records
        np.testing.assert_allclose(raw[:n], vm, atol=2 * 16.384 / 65535)
        onsets, _, texts = edf.readAnnotations()
        assert edf.getPatientCode() == "P-0001"
    assert any(t.startswith("onset VM") for t in texts)
    assert any(t.startswith("recording ends") for t in texts)
    contraction_rows = [e for e in events if e["kind"] == "contraction"]
    edf_contractions = [
        o for o, t in zip(onsets, texts, strict=True) if t.startswith("contraction")
    ]
    assert len(edf_contractions) == len(contraction_rows) >= 3
    assert edf_contractions == pytest.approx([float(e["t_s"]) for e in contraction_rows], abs=1e-3)


def test_record_suffix_chooses_the_format(tmp_path: Path) -> None:
    run_cli(
        tmp_path,
        "--device",
        "sim?speed=max",
        "--duration",
        "1.5",
        "--record",
        str(tmp_path / "only.edf"),
    )
    assert (tmp_path / "only.edf").exists() and not (tmp_path / "only.csv").exists()
    with pyedflib.EdfReader(str(tmp_path / "only.edf")) as edf:
        assert edf.getNSamples()[0] == 2 * 2000  # 1.5 s at 2 kHz, padded to 2 records
