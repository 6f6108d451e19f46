"""BIDS-EMG export (issue 16 item 2): sessions run through Mosquitto and the clinic logger into
the database, the station's EDF+ record beside them; exported, read back with mne-bids and
checked by the BIDS validator (where it is installed) and by `check_dataset`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import mne
import mne_bids
import numpy as np
import pytest
from rich.console import Console

from bench.bench_export import write_recording
from bench.bench_report import fill
from feedback import app
from feedback.clinic import export as export_cli
from feedback.clinic.bids import DEFAULT_PLACEMENT, SkipReason, emg_name, export
from feedback.clinic.bids_check import check_dataset, run_validator
from feedback.clinic.db import connect
from feedback.clinic.edf_header import read_header
from feedback.clinic.store import ClinicStore, Incoming
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.topics import Topics
from tests.clinic.conftest import (
    ClinicBroker,
    running_logger,
    station_settings,
    wait_until,
)
from tests.clinic.test_logger import session_ended

VALIDATOR = Path(sys.executable).with_name("bids-validator-deno")


def tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def validator_errors(root: Path) -> list[dict[str, Any]]:
    return [i for i in run_validator(root, VALIDATOR) if i.get("severity") == "error"]


def need_validator() -> None:
    if not VALIDATOR.exists():
        pytest.skip(f"bids-validator-deno not installed beside {sys.executable} (dev extra)")


async def recorded_sessions(broker: ClinicBroker, db_url: str, tmp_path: Path) -> list[str]:
    """Two real-time sessions of P-0001 through the logger: the first recorded (EDF+ and CSV),
    the second not (its export is skipped)."""
    ids = []
    async with running_logger(BrokerAccess.from_url(broker.url), db_url):
        for record in (tmp_path / "station" / "session-1", None):
            settings = station_settings("st-bids")
            options = app.RunOptions(
                device="sim?speed=max", duration_s=None, db=str(tmp_path / "st.db"),
                broker=broker.url, report=None, live_view=False, record=record,
            )  # fmt: skip
            with open(os.devnull, "w") as devnull:
                rep = await app.run(settings, options, console=Console(file=devnull))
            ids.append(rep["session_id"])
            await wait_until(lambda: session_ended(db_url, ids[-1]), 10, "session_end")
    return ids


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_round_trip_through_the_logger(
    backend: str,
    clinic_broker: ClinicBroker,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db_url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else str(tmp_path / "clinic.db")
    )
    recorded, unrecorded = await recorded_sessions(clinic_broker, db_url, tmp_path)
    out = tmp_path / "bids"
    station = tmp_path / "station"
    argv = ["bids", "--db", db_url, "--out", str(out), "--recordings", str(station)]
    assert export_cli.main(argv) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert [e["session"] for e in summary["exported"]] == [recorded]
    assert summary["skipped"] == [{"session": unrecorded, "reason": "no_recording",
                                   "detail": "no .edf/.bdf file names this session"}]  # fmt: skip
    assert f"skipped {unrecorded}: no_recording" in printed.err
    assert check_dataset(out) == []
    if VALIDATOR.exists():
        assert validator_errors(out) == []

    # Pseudonymous ids only: the participant is the clinic's pseudonym, nothing else about them.
    assert tsv(out / "participants.tsv") == [
        {"participant_id": "sub-P0001", "species": "homo sapiens", "pseudonym": "P-0001"}
    ]
    sessions = tsv(out / "sub-P0001" / "sub-P0001_sessions.tsv")
    assert [(s["session_id"], s["source_session"]) for s in sessions] == [("ses-1", recorded)]

    bids_path = mne_bids.BIDSPath(subject="P0001", session="1", task="demo", datatype="emg",
                                  suffix="emg", extension=".edf", root=out)  # fmt: skip
    raw = mne_bids.read_raw_bids(bids_path, verbose="error")
    station_edf = station / "session-1.edf"
    header = read_header(station_edf)
    emg = {emg_name(s, ("VM", "VL")): s for s in header.signals if emg_name(s, ("VM", "VL"))}
    assert set(emg) == {"VM", "VL"}
    types = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    assert {types[s.label] for s in emg.values()} == {"emg"}
    assert raw.info["line_freq"] == 50 and raw.info["sfreq"] == 2000

    # Same samples as the station had, within one step of the record's resolution: the CSV
    # the recorder wrote alongside holds them at full precision (mV).
    samples = np.genfromtxt(station / "session-1.csv", delimiter=",", names=True)
    for channel, signal in emg.items():
        to_mv = {"uV": 1e-3, "mV": 1.0}[signal.dimension]
        got_mv = raw.get_data(picks=[signal.label])[0] * 1e3  # MNE gives volts
        want_mv = samples[f"{channel}_mV"]
        assert len(want_mv) <= len(got_mv)  # the last record is padded
        assert np.max(np.abs(got_mv[: len(want_mv)] - want_mv)) <= signal.lsb * to_mv * 1.001
        assert np.std(want_mv) > 10 * signal.lsb * to_mv  # a real signal, not zeros

    # Same events: what mne-bids reads is events.tsv, which holds every event of the database
    events = tsv(out / "sub-P0001/ses-1/emg/sub-P0001_ses-1_task-demo_events.tsv")
    assert [(round(a["onset"], 4), a["description"]) for a in raw.annotations] == [
        (float(e["onset"]), e["trial_type"]) for e in events
    ]
    db = connect(db_url)
    try:

        def count(sql: str) -> int:
            return int(db.query(sql, (recorded,))[0][0])

        kinds = Counter(e["trial_type"] for e in events)
        assert sum(v for k, v in kinds.items() if k.startswith("cue_")) == count(
            "SELECT count(*) FROM cues WHERE session_id = ?"
        )
        assert kinds["rep"] == count("SELECT count(*) FROM reps WHERE session_id = ?") == 3
        assert kinds["work_period"] == 3
        assert (
            kinds["contraction"]
            == count("SELECT count(*) FROM events WHERE session_id = ? AND type = 'contraction'")
            > 0
        )
        assert (
            len(events)
            == count("SELECT count(*) FROM cues WHERE session_id = ?")
            + count("SELECT count(*) FROM reps WHERE session_id = ?")
            + count("SELECT count(*) FROM events WHERE session_id = ?")
            + kinds["work_period"]
        )
    finally:
        db.close()
    # ... on the record's own time line: each cue where the recorder annotated it.
    record = mne.io.read_raw_edf(station_edf, verbose="error")
    edf_cues = sorted(round(a["onset"], 4) for a in record.annotations
                      if a["description"].startswith("cue"))  # fmt: skip
    bids_cues = sorted(float(e["onset"]) for e in events if e["trial_type"].startswith("cue_"))
    assert bids_cues == pytest.approx(edf_cues, abs=0.5 / 2000) and len(bids_cues) >= 6
    assert all(e["onset_source"] == "sample" for e in events)  # all carried sample indices

    # Run twice into the same folder: the same dataset, no doubled rows.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert export_cli.main(argv) == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def synthetic(tmp_path: Path, sessions: int = 2, patient: str = "P-0030") -> tuple[str, Path]:
    db_url = str(tmp_path / "clinic.db")
    ids = fill(db_url, patient=patient, sessions=sessions)
    rec = tmp_path / "recordings"
    rec.mkdir(exist_ok=True)
    for k, sid in enumerate(ids):
        write_recording(rec / f"r{patient}{k}.edf", sid, patient, seconds=62, seed=k)
    return db_url, rec


def exported(tmp_path: Path) -> Path:
    db_url, rec = synthetic(tmp_path)
    out = tmp_path / "bids"
    db = connect(db_url)
    try:
        summary = export(db, out, [rec])
    finally:
        db.close()
    assert len(summary.exported) == 2 and not summary.skipped
    assert check_dataset(out) == []
    return out


def test_check_dataset_fails_a_broken_dataset(tmp_path: Path) -> None:
    """Negative controls: each break is caught (a check that passed everything would fail here)."""
    good = exported(tmp_path)
    emg_dir = good / "sub-P0030" / "ses-1" / "emg"
    stem = "sub-P0030_ses-1_task-demo"

    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(good, copy)
        return copy / emg_dir.relative_to(good)

    d = broken("no-reference")
    meta = json.loads((d / f"{stem}_emg.json").read_text())
    del meta["EMGReference"]
    (d / f"{stem}_emg.json").write_text(json.dumps(meta))
    assert [p.code for p in check_dataset(d.parents[2])] == ["SIDECAR_KEY_REQUIRED"]

    d = broken("row-short")
    lines = (d / f"{stem}_channels.tsv").read_text().splitlines(keepends=True)
    (d / f"{stem}_channels.tsv").write_text("".join(lines[:-1]))
    assert [p.code for p in check_dataset(d.parents[2])] == ["CHANNELS_MISMATCH"]

    d = broken("count")
    meta = json.loads((d / f"{stem}_emg.json").read_text())
    meta["EMGChannelCount"] += 1
    meta["SamplingFrequency"] = 1000
    (d / f"{stem}_emg.json").write_text(json.dumps(meta))
    codes = {p.code for p in check_dataset(d.parents[2])}
    assert codes == {"EMG_CHANNEL_COUNT_MISMATCH", "SAMPLING_FREQUENCY_MISMATCH"}

    d = broken("no-data")
    (d / f"{stem}_emg.edf").unlink()
    assert [p.code for p in check_dataset(d.parents[2])] == ["SIDECAR_WITHOUT_DATAFILE"]


def test_check_dataset_reports_each_rule_by_its_code(tmp_path: Path) -> None:
    """Every rule of the checklist, one break each: a rule lost when the check was split into
    functions (or a break reported under another code) fails here."""
    good = exported(tmp_path)
    emg = Path("sub-P0030") / "ses-1" / "emg"
    stem = "sub-P0030_ses-1_task-demo"

    def codes_after(name: str, breaking: Any) -> list[str]:
        copy = tmp_path / name
        shutil.copytree(good, copy)
        breaking(copy, copy / emg)
        return [p.code for p in check_dataset(copy)]

    def rewrite_events(d: Path, column: str, value: str) -> None:
        lines = (d / f"{stem}_events.tsv").read_text().splitlines(keepends=True)
        head = lines[0].rstrip("\n").split("\t")
        cells = lines[1].rstrip("\n").split("\t")
        cells[head.index(column)] = value
        lines[1] = "\t".join(cells) + "\n"
        (d / f"{stem}_events.tsv").write_text("".join(lines))

    breaks = {
        "MISSING": lambda root, d: (root / "dataset_description.json").unlink(),
        "UNREADABLE_DATA": lambda root, d: (d / f"{stem}_emg.edf").write_bytes(b"not an edf"),
        "MISSING_SIDECAR": lambda root, d: (d / f"{stem}_emg.json").unlink(),
        "MISSING_CHANNELS": lambda root, d: (d / f"{stem}_channels.tsv").unlink(),
        "MISSING_EVENTS": lambda root, d: (d / f"{stem}_events.tsv").unlink(),
        "EVENTS_MALFORMED": lambda root, d: rewrite_events(d, "onset", "soon"),
        "EVENT_OUTSIDE_RECORDING": lambda root, d: rewrite_events(d, "onset", "100000"),
        "PARTICIPANT_MISSING": lambda root, d: (root / "participants.tsv").write_text(
            "participant_id\n"
        ),
    }
    for code, breaking in breaks.items():
        assert codes_after(code.lower(), breaking) == [code], code


def test_bids_validator_accepts_the_export_and_rejects_a_missing_required_field(
    tmp_path: Path,
) -> None:
    need_validator()
    good = exported(tmp_path)
    assert validator_errors(good) == []
    sidecar = good / "sub-P0030/ses-1/emg/sub-P0030_ses-1_task-demo_emg.json"
    meta = json.loads(sidecar.read_text())
    del meta["PowerLineFrequency"]
    sidecar.write_text(json.dumps(meta))
    errors = validator_errors(good)
    assert [(e["code"], e.get("subCode")) for e in errors] == [
        ("SIDECAR_KEY_REQUIRED", "PowerLineFrequency")
    ]


MONTAGE = {
    "scheme": "SENIAM",
    "reference": "medial malleolus of the same leg",
    "skin_preparation": "shaved, abraded, alcohol",
    "electrodes": {
        "VM": {"muscle": "vastus medialis", "side": "left", "location": "80% ASIS-knee",
               "orientation": "oblique", "inter_electrode_mm": 20, "electrode_size_mm": 10,
               "material": "AgAgCl", "kind": "surface"},
        "VL": {"muscle": "vastus lateralis", "side": "left", "location": "2/3 ASIS-patella",
               "inter_electrode_mm": 20, "electrode_size_mm": 10, "material": "AgAgCl",
               "kind": "surface"},
    },
}  # fmt: skip


def ingest_session(db_url: str, sid: str, patient: str, **extra: Any) -> None:
    topics = Topics("clinic-demo", "st-m")
    settings = {"session": {"patient": patient}, "target": {"low_pct": 30, "high_pct": 60},
                "protocol": {"reps": 3}, "quality": {"mains_hz": 60}}  # fmt: skip
    start = {"v": 1, "type": "session_start", "session": sid, "msg_id": 1, "t": 1.79e9,
             "patient": patient, "side": "left", "protocol": "knee ext.", "settings": settings,
             "device": {"spec": "x", "kind": "ble", "rate_hz": 2000, "channels": ["VM", "VL"],
                        "manufacturer": "Acme"}, **extra}  # fmt: skip
    store = ClinicStore(db_url)
    try:
        result = store.ingest([Incoming(topics.session, json.dumps(start).encode(), 1.79e9)])
        assert result.invalid == 0, result.reasons
    finally:
        store.close()


def test_montage_from_session_start_goes_into_the_sidecars(tmp_path: Path) -> None:
    db_url = str(tmp_path / "clinic.db")
    ingest_session(db_url, "S-mont", "P-7", montage=MONTAGE)
    ingest_session(db_url, "S-none", "P-8")
    rec = tmp_path / "rec"
    rec.mkdir()
    write_recording(rec / "a.edf", "S-mont", "P-7", seconds=3)
    write_recording(rec / "b.edf", "S-none", "P-8", seconds=3)
    db = connect(db_url)
    try:
        summary = export(db, tmp_path / "bids", [rec])
    finally:
        db.close()
    assert len(summary.exported) == 2
    emg = tmp_path / "bids/sub-P7/ses-1/emg"
    meta = json.loads((emg / "sub-P7_ses-1_task-kneeext_emg.json").read_text())
    assert meta["EMGPlacementScheme"] == "Other"
    assert meta["EMGPlacementSchemeDescription"].startswith("SENIAM: ")
    assert meta["EMGReference"] == "medial malleolus of the same leg"
    assert meta["SkinPreparation"] == "shaved, abraded, alcohol"
    assert meta["InterelectrodeDistance"] == 20 and meta["ElectrodeMaterial"] == "AgAgCl"
    assert meta["TaskName"] == "knee ext." and meta["PowerLineFrequency"] == 60
    assert meta["Manufacturer"] == "Acme" and meta["EMGChannelCount"] == 2
    rows = {r["name"]: r for r in tsv(emg / "sub-P7_ses-1_task-kneeext_channels.tsv")}
    assert rows["EMG VM"]["target_muscle"] == "left vastus medialis"
    assert rows["EMG VM"]["placement_description"] == (
        "80% ASIS-knee; oblique; electrodes 10 mm; surface AgAgCl"
    )
    assert rows["EMG VL"]["interelectrode_distance"] == "20"
    assert rows["EMG VM env"]["type"] == "MISC" and rows["EMG VM"]["units"] == "uV"
    # Without a montage: the documented default, said to be one.
    meta = json.loads((tmp_path / "bids/sub-P8/ses-1/emg/sub-P8_ses-1_task-kneeext_emg.json")
                      .read_text())  # fmt: skip
    assert meta["EMGPlacementSchemeDescription"] == DEFAULT_PLACEMENT
    assert meta["EMGReference"] == "n/a"
    if VALIDATOR.exists():
        assert validator_errors(tmp_path / "bids") == []


def test_labels_numbering_and_skips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_url, rec = synthetic(tmp_path, sessions=3, patient="P-0030")
    (rec / "rP-00300.edf").unlink()  # the first session's record is gone
    (rec / "rP-00302.edf").unlink()  # the third's is broken, named after the session
    (rec / "S20260101-000002-abcdef.edf").write_bytes(b"not an EDF file")
    out = tmp_path / "bids"
    argv = ["bids", "--db", db_url, "--out", str(out), "--recordings", str(rec),
            "--patient", "P-0030"]  # fmt: skip
    assert export_cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(s["reason"]) for s in summary["skipped"]] == [
        SkipReason.NO_RECORDING,
        SkipReason.UNREADABLE_RECORDING,
    ]
    # Numbered over all of the patient's sessions, so a later export keeps the numbers.
    assert [e["file"].split("/")[1] for e in summary["exported"]] == ["ses-2"]
    assert check_dataset(out) == []
    # Nothing to export is exit 1; an unknown patient too; a missing database 2.
    assert export_cli.main([*argv[:-1], "P-404"]) == 1
    assert export_cli.main(["bids", "--db", str(tmp_path / "nope.db"), "--out", str(out)]) == 2
    assert not (tmp_path / "nope.db").exists()
    # A session whose start message never arrived (only its end did): skipped, said why.
    end = {"v": 1, "type": "session_end", "session": "S-orphan", "msg_id": 9, "t": 1.8e9,
           "summary": {"reps": 0, "duration_s": 1.0, "stopped_by": "end"}}  # fmt: skip
    store = ClinicStore(db_url)
    try:
        topic = Topics("clinic-demo", "st-bench").session
        assert store.ingest([Incoming(topic, json.dumps(end).encode(), 1.8e9)]).invalid == 0
    finally:
        store.close()
    assert export_cli.main(argv[:-2]) == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert ("S-orphan", "no_patient") in [(s["session"], s["reason"]) for s in skipped]
    # Two pseudonyms that make one BIDS label are refused, not merged.
    ingest_session(db_url, "S-x", "P0030")
    assert export_cli.main(argv[:-2]) == 2
    assert "both make the BIDS label sub-P0030" in capsys.readouterr().err


def test_bdf_record_is_exported_as_bdf(tmp_path: Path) -> None:
    """A BDF+ record (24 bit, what the recorder writes where EDF would clip) keeps its format:
    `_emg.bdf`, header read the BDF way, read back by mne-bids within one LSB."""
    import pyedflib

    db_url = str(tmp_path / "clinic.db")
    ingest_session(db_url, "S-bdf", "P-9")
    path = tmp_path / "rec" / "x.bdf"
    path.parent.mkdir()
    rate, seconds = 2000, 3
    data = np.random.default_rng(3).normal(0, 3000, (2, rate * seconds))  # µV, past EDF's range
    w = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_BDFPLUS)
    try:
        w.setSignalHeaders([{"label": f"EMG {c}", "dimension": "uV", "sample_frequency": rate,
                             "physical_max": 50000.0, "physical_min": -50000.0,
                             "digital_max": 8388607, "digital_min": -8388608,
                             "transducer": "", "prefilter": ""} for c in ("VM", "VL")])  # fmt: skip
        w.setPatientCode("P-9")
        w.setRecordingAdditional("S-bdf_delay_25.0ms")
        w.writeSamples(list(data))
    finally:
        w.close()
    db = connect(db_url)
    try:
        summary = export(db, tmp_path / "bids", [path.parent])
    finally:
        db.close()
    assert [f for _, f in summary.exported] == [
        "sub-P9/ses-1/emg/sub-P9_ses-1_task-kneeext_emg.bdf"
    ]
    assert check_dataset(tmp_path / "bids") == []
    raw = mne_bids.read_raw_bids(
        mne_bids.BIDSPath(subject="P9", session="1", task="kneeext", datatype="emg",
                          suffix="emg", extension=".bdf", root=tmp_path / "bids"),
        verbose="error",
    )  # fmt: skip
    lsb_uv = 100000.0 / (2**24 - 1)
    got = raw.get_data(picks=["EMG VM", "EMG VL"]) * 1e6
    assert np.max(np.abs(got[:, : data.shape[1]] - data)) <= lsb_uv * 1.001
    assert raw.get_channel_types() == ["emg", "emg"]
    if VALIDATOR.exists():
        assert validator_errors(tmp_path / "bids") == []


def test_quality_flags_become_spans_and_channel_status(tmp_path: Path) -> None:
    db_url = str(tmp_path / "clinic.db")
    ingest_session(db_url, "S-q", "P-5")
    topics = Topics("clinic-demo", "st-m")
    t0 = 1.79e9
    msgs = [  # (msg_id, t, body): VM off for 2.5 of 3 s, VL flagged 0.5 s, mains never cleared
        (2, t0 + 0.5, {"type": "cue", "kind": "phase", "value": "work", "index": 1000,
                       "t_sample": 0.5}),
        (3, t0 + 0.2, {"type": "quality", "flag": "electrode_off", "channel": "VM",
                       "active": True, "value": None}),
        (4, t0 + 1.0, {"type": "quality", "flag": "low_snr", "channel": "VL", "active": True}),
        (5, t0 + 1.5, {"type": "quality", "flag": "low_snr", "channel": "VL", "active": False}),
        (6, t0 + 2.7, {"type": "quality", "flag": "electrode_off", "channel": "VM",
                       "active": False}),
        (7, t0 + 2.8, {"type": "quality", "flag": "mains_noise", "channel": "VL",
                       "active": True}),
    ]  # fmt: skip
    store = ClinicStore(db_url)
    try:
        batch = []
        for msg_id, t, body in msgs:
            leaf = topics.cue if body["type"] == "cue" else topics.event
            m = {"v": 1, "session": "S-q", "msg_id": msg_id, "t": t, **body}
            batch.append(Incoming(leaf, json.dumps(m).encode(), t))
        assert store.ingest(batch).invalid == 0
    finally:
        store.close()
    rec = tmp_path / "rec"
    rec.mkdir()
    write_recording(rec / "q.edf", "S-q", "P-5", seconds=3)
    db = connect(db_url)
    try:
        export(db, tmp_path / "bids", [rec])
    finally:
        db.close()
    emg = tmp_path / "bids/sub-P5/ses-1/emg"
    events = tsv(emg / "sub-P5_ses-1_task-kneeext_events.tsv")
    quality = [(e["onset"], e["duration"], e["channel"], e["detail"], e["onset_source"])
               for e in events if e["trial_type"] == "quality"]  # fmt: skip
    # The cue says wall clock t0 + 0.5 is sample 1000 (0.5 s): t0 is the record's start.
    assert quality == [
        ("0.2000", "2.5000", "VM", "electrode_off", "clock"),
        ("1.0000", "0.5000", "VL", "low_snr", "clock"),
        ("2.8000", "n/a", "VL", "mains_noise (not cleared)", "clock"),
    ]
    rows = {r["name"]: r for r in tsv(emg / "sub-P5_ses-1_task-kneeext_channels.tsv")}
    assert (rows["EMG VM"]["status"], rows["EMG VM"]["status_description"]) == (
        "bad",
        "quality flags raised: electrode_off 2.5 s",
    )
    assert (rows["EMG VL"]["status"], rows["EMG VL"]["status_description"]) == (
        "good",
        "quality flags raised: low_snr 0.5 s, mains_noise 0.2 s",
    )
    assert check_dataset(tmp_path / "bids") == []
