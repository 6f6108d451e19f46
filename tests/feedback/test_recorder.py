"""The processed record, written by a real session run and read back with pyedflib and csv."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from devices.recording_formats import load_recording
from feedback.outputs.repair import inspect

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
        assert labels[:2] == ["EMG VM", "EMG BF"] and "EMG VM env" in labels and "zone" in labels
        assert edf.getPhysicalDimension(0) == "uV"
        assert edf.getSampleFrequency(0) == 1000
        raw = edf.readSignal(0)
        assert raw.shape[0] == 16 * 1000  # 15.601 s → 16 records
        np.testing.assert_allclose(raw[:n] / 1000, vm, atol=2 * 16.384 / 65535)
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


# -- crash safety (issue 11, defect 6) -------------------------------------------------------


def header_count(path: Path) -> int:
    with path.open("rb") as f:
        f.seek(236)
        return int(f.read(8).decode("ascii").strip())


def test_kill_9_mid_session_leaves_an_edf_and_csvs_that_open(tmp_path: Path) -> None:
    """A real station process recording a session is killed with SIGKILL: the EDF+ opens up to
    its last whole record with the annotations written so far, and every event in it is in the
    events CSV, whose rows are all whole."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run_feedback.py"),
            "--headless",
            "--db",
            str(tmp_path / "s.db"),
            "--device",
            "sim?speed=max",
            "--duration",
            "600",
            "--record",
            str(tmp_path / "rec"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    edf = tmp_path / "rec.edf"
    try:
        deadline = time.monotonic() + 90
        # 8 records of 2 s of sim signals: 9 signals x 2000 samples x 2 bytes each.
        while not (edf.exists() and edf.stat().st_size > 8 * 36_000):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the session wrote no EDF records"
            time.sleep(0.02)
        time.sleep(0.3)
    finally:
        proc.kill()  # SIGKILL: no close(), no atexit, no flush
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with pyedflib.EdfReader(str(edf)) as reader:
        records = reader.datarecords_in_file
        assert records >= 8
        assert reader.getNSamples()[0] == records * 2000
        assert reader.getPatientCode() == "P-0001"
        onsets, _, texts = reader.readAnnotations()
    assert records == header_count(edf)
    # What EDFbrowser checks: the file holds exactly the records the header counts. (A kill
    # between a record's write and the count's update leaves one more whole record, which
    # readers accept and `repair` counts in.)
    layout = inspect(edf)
    assert layout.count_in_header == records
    assert layout.whole_records in (records, records + 1)
    assert {"cue", "onset"} <= {t.split()[0] for t in texts}
    with (tmp_path / "rec.events.csv").open(newline="") as f:
        raw = f.read()
    assert raw.endswith("\n")  # no torn last row
    events = list(csv.DictReader(raw.splitlines()))
    in_csv = {(round(float(e["t_s"]), 3), e["kind"]) for e in events}
    for onset, text in zip(onsets, texts, strict=True):
        assert (round(float(onset), 3), text.split()[0]) in in_csv, text
    # The samples CSV reaches at least the EDF's last whole record, row by whole row.
    with (tmp_path / "rec.csv").open(newline="") as f:
        rows = f.read().splitlines()
    assert len(rows) - 1 >= (records - 1) * 2000
    assert all(r.count(",") == rows[0].count(",") for r in rows[1:])


OLD_WRITER = """
import os, sys, numpy as np, pyedflib
w = pyedflib.EdfWriter(sys.argv[1], 2, pyedflib.FILETYPE_EDFPLUS)
w.setSignalHeaders([{"label": f"S{i}", "dimension": "mV", "sample_frequency": 100,
    "physical_min": -10.0, "physical_max": 10.0, "digital_min": -32768, "digital_max": 32767,
    "transducer": "", "prefilter": ""} for i in range(2)])
for k in range(5):
    w.writeSamples([np.full(100, k + 0.5), np.full(100, -k - 0.5)])
    w.writeAnnotation(k + 0.1, -1, f"event {k}")
print("written", flush=True)
sys.stdin.read()  # wait here until killed
"""


def old_recorder_file(tmp_path: Path) -> Path:
    """What the pyedflib-based recorder left when killed: count -1, plus a torn last record."""
    path = tmp_path / "old.edf"
    proc = subprocess.Popen(
        [sys.executable, "-c", OLD_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "written\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with path.open("ab") as f:  # a write cut short by the kill (made by hand: timing is luck)
        f.write(b"\x01\x02" * 77)
    return path


def test_repair_opens_a_file_left_by_the_old_recorder(tmp_path: Path) -> None:
    path = old_recorder_file(tmp_path)
    assert header_count(path) == -1
    with pytest.raises(OSError):
        pyedflib.EdfReader(str(path))
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "feedback.outputs.repair", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "record count set to 5 (was -1); cut 154 bytes" in proc.stdout
    assert (tmp_path / "old.edf.bak").read_bytes() == before
    with pyedflib.EdfReader(str(path)) as reader:
        assert reader.datarecords_in_file == 5
        np.testing.assert_allclose(
            reader.readSignal(0)[::100], [0.5, 1.5, 2.5, 3.5, 4.5], atol=1e-3
        )
        np.testing.assert_allclose(
            reader.readSignal(1)[::100], [-0.5, -1.5, -2.5, -3.5, -4.5], atol=1e-3
        )
    # A second run finds nothing to do.
    again = subprocess.run(
        [sys.executable, "-m", "feedback.outputs.repair", "--no-backup", str(path)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_repair_refuses_what_is_not_an_edf_file(tmp_path: Path) -> None:
    from feedback.outputs.repair import main

    (tmp_path / "notes.edf").write_text("hello\n" * 100)
    (tmp_path / "short.edf").write_bytes(b"0       ")
    assert main([str(tmp_path / "notes.edf"), str(tmp_path / "short.edf")]) == 2
    assert (tmp_path / "notes.edf").read_text() == "hello\n" * 100  # untouched


def test_edf_writer_file_is_valid_after_every_record(tmp_path: Path) -> None:
    """Read back with pyedflib after each record, without close(): what a crash would leave."""
    from feedback.outputs.edf_writer import EdfPlusWriter, SignalSpec

    path = tmp_path / "w.edf"
    w = EdfPlusWriter(
        path,
        [SignalSpec("VM", "mV", -16.384, 16.384), SignalSpec("VM active", "", 0, 1, 0, 1)],
        rate_hz=250,
        patient_code="P 0002",  # written P_0002 (a space splits EDF+ subfields), read back
        equipment="vm-feedback",
        recording_additional="S1_delay_3.0ms",
        annotation_bytes=40,  # room for 2 annotations: the rest wait for the next record
    )
    rng = np.random.default_rng(1)
    written = []
    for k in range(4):
        for j in range(3):
            w.annotate(k + j * 0.1, f"event {k}.{j}")
        rec = np.vstack([rng.uniform(-16, 16, 250), rng.integers(0, 2, 250)])
        written.append(rec)
        w.write_record(rec)
        with pyedflib.EdfReader(str(path)) as reader:
            assert reader.datarecords_in_file == k + 1
            assert reader.getPatientCode() == "P 0002"
            assert reader.getEquipment() == "vm-feedback"
            np.testing.assert_allclose(
                reader.readSignal(0), np.concatenate([r[0] for r in written]), atol=16.384 / 32767
            )
            np.testing.assert_array_equal(
                reader.readSignal(1), np.concatenate([r[1] for r in written])
            )
            _, _, texts = reader.readAnnotations()
        assert len(texts) == w.annotations_written and 0 < len(texts) < 3 * (k + 1)
    assert w.annotations_pending == 12 - w.annotations_written
    w.close()


def test_contraction_annotation_names_its_unit() -> None:
    """Without a calibration the % MVC rests on a placeholder MVC: the record says µV instead."""
    from feedback.outputs.recorder import _peak
    from feedback.processing.metrics import Contraction

    base = dict(number=1, channel="VM", onset_index=0, offset_index=2000, duration_s=1.0,
                peak_pct=7.2, mean_pct=5.0, time_to_band_s=None, hold_in_band_s=0.0,
                relaxation_s=None, median_freq_hz=None, vm_vl_onset_ms=None, vm_vl_ratio=None,
                peak_mv=0.036)  # fmt: skip
    assert _peak(Contraction(**base, calibrated=True)) == "7%MVC"  # type: ignore[arg-type]
    uncalibrated = _peak(Contraction(**base, calibrated=False))  # type: ignore[arg-type]
    assert uncalibrated == "36uV (uncalibrated)"
    assert "MVC" not in uncalibrated
