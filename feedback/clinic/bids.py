"""BIDS-EMG (BIDS 1.11, BEP042) export of stored sessions and their recordings.

One BIDS subject per pseudonymous patient, one BIDS session per stored session (numbered 1, 2,
3, ... in start order over all of that patient's sessions, so a later export of more sessions
keeps the numbers), one task per exercise protocol. Per session:

    sub-<patient>/ses-<n>/emg/sub-<patient>_ses-<n>_task-<protocol>_emg.edf|.bdf   the record
    ..._emg.json          placement, reference, filters, power line, rate, task (BEP042)
    ..._channels.tsv      every signal of the file: EMG channels and the station's derived ones
    ..._events.tsv        cues, work periods, reps, contractions, stimulation, other events

The data file is the station's EDF+/BDF+ record copied byte for byte (signals, annotations and
header as written); channels, units and filters are read from its header, so the export follows
whatever the recorder writes. A session whose record is not found is skipped with a typed
reason (`Skipped`), never exported as sidecars without data (BIDS forbids that). Choices and
their reasons: docs/bids.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import importlib.metadata
import json
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback.clinic.bids_events import EVENT_COLUMNS, EVENTS_JSON, BidsEvent, session_events
from feedback.clinic.db import Backend
from feedback.clinic.edf_header import EdfHeader, NotAnEdfFile, Signal, read_header

BIDS_VERSION = "1.11.1"
DEFAULT_LINE_HZ = 50
# BEP042 `*_emg.json` REQUIRED keys (the validator's schema, rules/sidecars/emg.yaml);
# EMGPlacementSchemeDescription is required too when the scheme is "Other".
REQUIRED_EMG_JSON = (
    "EMGPlacementScheme", "EMGReference", "SamplingFrequency", "PowerLineFrequency",
    "RecordingType", "SoftwareFilters", "TaskName",
)  # fmt: skip
CHANNEL_COLUMNS = (
    "name", "type", "units", "description", "sampling_frequency", "signal_electrode",
    "reference", "target_muscle", "placement_description", "interelectrode_distance",
    "low_cutoff", "high_cutoff", "notch", "status", "status_description",
)  # fmt: skip
VOLT_UNITS = {"uv": "uV", "µv": "uV", "mv": "mV", "v": "V", "nv": "nV"}
MUSCLES = {
    "VM": "vastus medialis", "VMO": "vastus medialis obliquus", "VL": "vastus lateralis",
    "RF": "rectus femoris", "BF": "biceps femoris", "ST": "semitendinosus",
    "GM": "gluteus medius", "TA": "tibialis anterior",
}  # fmt: skip
DEFAULT_PLACEMENT = (
    "Placement was not recorded for this session. The station's documented default is a "
    "bipolar pair of surface electrodes over the belly of each target muscle, placed by the "
    "therapist by palpation and visual reference (for vastus medialis, SENIAM: 80 % of the "
    "line from the anterior superior iliac spine to the joint space in front of the anterior "
    "border of the medial ligament); positions were not measured."
)
RECORDING_SUFFIXES = (".edf", ".bdf")


class ExportError(RuntimeError):
    """The export cannot go on (a clash of labels, an unusable output folder)."""


class SkipReason(enum.StrEnum):
    NO_RECORDING = "no_recording"  # no EDF/BDF file names this session
    UNREADABLE_RECORDING = "unreadable_recording"  # found, but not a readable EDF/BDF header
    NO_EMG_CHANNEL = "no_emg_channel"  # the file holds none of the session's EMG channels
    NO_PATIENT = "no_patient"  # the session_start never arrived: no patient, no protocol


@dataclass(frozen=True, slots=True)
class Skipped:
    session_id: str
    reason: SkipReason
    detail: str


@dataclass(slots=True)
class ExportSummary:
    out: Path
    subjects: list[str] = field(default_factory=list)
    exported: list[tuple[str, str]] = field(default_factory=list)  # (session id, data file)
    skipped: list[Skipped] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # extra files naming one session
    events: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "subjects": self.subjects,
            "sessions_exported": len(self.exported),
            "exported": [{"session": s, "file": f} for s, f in self.exported],
            "skipped": [
                {"session": s.session_id, "reason": str(s.reason), "detail": s.detail}
                for s in self.skipped
            ],
            "duplicate_recordings": self.duplicates,
            "events": self.events,
            "seconds": round(self.seconds, 3),
        }


def bids_label(text: str) -> str:
    """A BIDS label (letters and digits only): `P-0001` -> `P0001`."""
    label = re.sub(r"[^A-Za-z0-9]", "", text)
    if not label:
        raise ExportError(f"{text!r} has no letter or digit to make a BIDS label of")
    return label


# -- finding the recordings -----------------------------------------------------------------


def find_recordings(
    folders: Sequence[Path], session_ids: Iterable[str]
) -> tuple[dict[str, Path | NotAnEdfFile], list[str]]:
    """Which file holds which session's record: the session id in the EDF+ recording field
    (the recorder writes `<session>_delay_...` there) or in the file name. Returns session id
    -> file (or the error reading the one file that names it), and the extra files that name
    an already matched session (the first in sorted order wins, so a rerun picks the same)."""
    wanted = set(session_ids)
    found: dict[str, Path | NotAnEdfFile] = {}
    extra: list[str] = []
    files = sorted(
        p
        for folder in folders
        for p in folder.rglob("*")
        if p.suffix.lower() in RECORDING_SUFFIXES and p.is_file()
    )
    for path in files:
        try:
            header: EdfHeader | None = read_header(path)
        except (NotAnEdfFile, OSError) as exc:
            header, error = None, NotAnEdfFile(str(exc))
        texts = [path.stem] + ([] if header is None else header.recording.split())
        for sid in _named_sessions(texts, wanted):
            if sid in found:
                extra.append(f"{path} (also {sid})")
            else:
                found[sid] = path if header is not None else error
    return found, extra


def _named_sessions(texts: Iterable[str], wanted: set[str]) -> set[str]:
    # An id may hold "_" itself, so every prefix up to an "_" is a candidate: "S1_a_delay_3ms"
    # tries "S1", "S1_a", "S1_a_delay" and the whole.
    hits = set()
    for text in texts:
        parts = text.split("_")
        for i in range(1, len(parts) + 1):
            cand = "_".join(parts[:i])
            if cand in wanted:
                hits.add(cand)
    return hits


# -- what the database says about a session ------------------------------------------------


@dataclass(slots=True)
class SessionInfo:
    session_id: str
    patient: str | None
    side: str | None
    protocol: str | None
    started_at: float | None
    ended_at: float | None
    settings: dict[str, Any]
    device: dict[str, Any]
    montage: dict[str, Any] | None


def sessions_of(db: Backend, patient: str | None = None) -> list[SessionInfo]:
    where, params = ("WHERE patient = ?", (patient,)) if patient is not None else ("", ())
    rows = db.query(
        "SELECT session_id, patient, side, protocol, started_at, ended_at, settings_json,"
        f" device_json FROM sessions {where} ORDER BY patient, started_at, session_id",
        params,
    )
    out = []
    for row in rows:
        settings = json.loads(row[6] or "{}")
        device = json.loads(row[7] or "{}")
        montage = settings.get("montage")  # the store keeps session_start's montage there
        out.append(
            SessionInfo(
                str(row[0]), row[1], row[2], row[3], row[4], row[5], settings, device,
                montage if isinstance(montage, dict) else None,
            )
        )  # fmt: skip
    return out


# -- channels -------------------------------------------------------------------------------

_FILTER = re.compile(r"\b(HP|LP|N)\s*:\s*([0-9.]+)\s*Hz", re.IGNORECASE)


def parse_prefilter(text: str) -> dict[str, float]:
    """EDF prefilter field `HP:20Hz LP:450Hz N:50Hz` -> {"HP": 20, "LP": 450, "N": 50}."""
    return {k.upper(): float(v) for k, v in _FILTER.findall(text)}


def emg_name(signal: Signal, device_channels: Sequence[str]) -> str | None:
    """The device channel an EDF signal records, if it is raw EMG: labelled like the channel
    (`VM`) or by EDF+ convention (`EMG VM`), in volts of some scale."""
    if signal.dimension.lower() not in VOLT_UNITS:
        return None
    name = signal.label.removeprefix("EMG").strip()
    return name if name in device_channels else None


def _unit(dimension: str) -> str:
    return VOLT_UNITS.get(dimension.lower(), dimension or "n/a")


IED_KEYS = ("inter_electrode_mm", "interelectrode_distance_mm", "inter_electrode_distance_mm")


def placement_scheme_text(montage: dict[str, Any]) -> str:
    """EMGPlacementSchemeDescription: how the electrodes were placed (the process, not the
    muscles, which channels.tsv names)."""
    scheme = str(montage.get("scheme") or "")
    if not montage.get("electrodes") and not scheme:
        return DEFAULT_PLACEMENT
    text = (
        f"{scheme}: " if scheme else ""
    ) + "bipolar surface electrodes placed by measured distance from anatomical landmarks, as the "
    text += "placement settings of the station (per patient profile) give them; each channel's "
    text += "site, orientation and electrode size are in channels.tsv (placement_description)."
    return text


def _placement_text(e: dict[str, Any]) -> str:
    parts = [str(e[k]) for k in ("location", "orientation") if e.get(k)]
    if e.get("electrode_size_mm"):
        parts.append(f"electrodes {_num(e['electrode_size_mm'])} mm")
    if e.get("material") or e.get("kind"):
        parts.append(" ".join(str(e[k]) for k in ("kind", "material") if e.get(k)))
    return "; ".join(parts) or "n/a"


def _electrode(montage: dict[str, Any] | None, channel: str) -> dict[str, Any]:
    if not montage:
        return {}
    for key in ("electrodes", "channels"):
        table = montage.get(key)
        if isinstance(table, dict) and isinstance(table.get(channel), dict):
            return dict(table[channel])
        if isinstance(table, list):
            for item in table:
                if isinstance(item, dict) and channel in (item.get("channel"), item.get("name")):
                    return dict(item)
    return {}


def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) not in (None, ""):
            return d[k]
    return None


def channel_rows(header: EdfHeader, info: SessionInfo) -> tuple[list[dict[str, str]], list[Signal]]:
    device_channels = tuple(info.device.get("channels") or ())
    rows, emg = [], []
    for s in header.signals:
        filt = parse_prefilter(s.prefilter)
        row = {c: "n/a" for c in CHANNEL_COLUMNS}
        row.update(
            name=s.label,
            units=_unit(s.dimension),
            sampling_frequency=_num(header.rate_hz(s)),
            low_cutoff=_num(filt.get("HP")),
            high_cutoff=_num(filt.get("LP")),
            notch=_num(filt.get("N")),
        )
        channel = emg_name(s, device_channels)
        if channel is None:
            row.update(type="MISC", description=_describe_misc(s, device_channels))
        else:
            emg.append(s)
            e = _electrode(info.montage, channel)
            side = _first(e, "side") or info.side
            muscle = _first(e, "muscle", "target_muscle") or MUSCLES.get(channel.upper())
            ied = _first(e, *IED_KEYS)
            row.update(
                type="EMG",
                description=f"surface EMG, {channel}"
                + (f"; {s.transducer}" if s.transducer else ""),
                target_muscle=f"{side} {muscle}" if muscle and side else (muscle or "n/a"),
                placement_description=_placement_text(e),
                reference=str(
                    _first(e, "reference") or (info.montage or {}).get("reference") or "n/a"
                ),
                interelectrode_distance=_num(ied),
                status="good",
                channel=channel,  # the device channel, for the quality flags (not a column)
            )
        rows.append({k: _tsv(v) for k, v in row.items()})
    return rows, emg


BAD_FRACTION = 0.5  # a channel flagged for half the recording or more is "bad"


def _channel_status(rows: list[dict[str, str]], events: list[BidsEvent], total_s: float) -> None:
    """status / status_description of each EMG channel from its quality flags: how long each
    flag was raised; "bad" when flags covered half the recording or more."""
    for row in rows:
        if row["type"] != "EMG":
            continue
        flagged: dict[str, float] = {}
        for e in events:
            if e.trial_type == "quality" and e.channel == row["channel"]:
                flag = e.detail.split()[0]
                end = total_s if e.duration is None else e.onset + e.duration
                flagged[flag] = flagged.get(flag, 0.0) + max(0.0, end - e.onset)
        if not flagged:
            row["status"] = "good"
            continue
        row["status"] = "bad" if sum(flagged.values()) >= BAD_FRACTION * total_s else "good"
        row["status_description"] = "quality flags raised: " + ", ".join(
            f"{flag} {secs:.1f} s" for flag, secs in sorted(flagged.items())
        )


def _describe_misc(s: Signal, device_channels: Sequence[str]) -> str:
    label = s.label.lower()
    words = {
        "env": "envelope of the EMG (station-derived)",
        "active": "muscle active, 0/1 (station-derived)",
        "quality": "signal-quality flags, bit field (station-derived)",
        "zone": "target zone: 0 below, 1 in band, 2 above (station-derived)",
    }
    for key, text in words.items():
        if key in label:
            return text
    return "station-derived signal"


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _tsv(v: Any) -> str:
    return str(v).replace("\t", " ").replace("\n", " ")


# -- the sidecars ---------------------------------------------------------------------------


def emg_sidecar(
    header: EdfHeader, emg: list[Signal], info: SessionInfo, line_hz: float | None
) -> dict[str, Any]:
    rate = header.rate_hz(emg[0])
    montage = info.montage or {}
    processing = info.settings.get("processing", {})
    filters: dict[str, Any] = {}
    first = parse_prefilter(emg[0].prefilter)
    if "HP" in first or "LP" in first:
        filters["Butterworth band-pass"] = {
            "HighPass (Hz)": first.get("HP", "n/a"),
            "LowPass (Hz)": first.get("LP", "n/a"),
            "Order": processing.get("bandpass_order", "n/a"),
        }
    if "N" in first:
        filters["Notch"] = {"Frequency (Hz)": first["N"]}
    sidecar: dict[str, Any] = {
        "TaskName": info.protocol or "unknown",
        "TaskDescription": _task_description(info),
        "EMGPlacementScheme": "Other",
        "EMGPlacementSchemeDescription": placement_scheme_text(montage),
        "EMGReference": str(_first(montage, "reference") or "n/a"),
        "SamplingFrequency": rate,
        "PowerLineFrequency": line_hz if line_hz is not None else power_line_hz(info),
        "RecordingType": "continuous",
        "SoftwareFilters": filters or "n/a",
        "EMGChannelCount": len(emg),
        "RecordingDuration": header.duration_s,
        "HardwareFilters": info.device.get("hardware_filters") or "n/a",
    }
    if (ground := _first(montage, "ground")) is not None:
        sidecar["EMGGround"] = str(ground)
    if (skin := _first(montage, "skin_preparation", "skin_prep")) is not None:
        sidecar["SkinPreparation"] = str(skin)
    # Keys BEP042 has once per file: given when every electrode pair agrees.
    electrodes = [_electrode(montage, c) for c in info.device.get("channels") or ()]
    for key, field_, cast in (
        ("InterelectrodeDistance", IED_KEYS, float),
        ("ElectrodeMaterial", ("material",), str),
        ("ElectrodeType", ("kind",), str),
    ):
        values = {_first(e, *field_) for e in electrodes}
        if len(values) == 1 and (one := values.pop()) is not None:
            sidecar[key] = cast(one)
    device = info.device
    if device.get("manufacturer"):
        sidecar["Manufacturer"] = str(device["manufacturer"])
    elif device.get("kind") == "simulator":
        sidecar["Manufacturer"] = "vm-feedback (simulated signals)"
    if device.get("kind"):
        sidecar["ManufacturersModelName"] = str(device["kind"])
    if device.get("firmware"):
        sidecar["SoftwareVersions"] = str(device["firmware"])
    if device.get("serial"):
        sidecar["DeviceSerialNumber"] = str(device["serial"])
    return sidecar


def power_line_hz(info: SessionInfo) -> int:
    """The mains frequency the station was set for (its notch, else its mains-noise check)."""
    notch = info.settings.get("processing", {}).get("notch_hz")
    if notch:
        return int(notch)
    mains = info.settings.get("quality", {}).get("mains_hz")
    return int(mains) if mains else DEFAULT_LINE_HZ


def _task_description(info: SessionInfo) -> str:
    p = info.settings.get("protocol", {})
    parts = [f"exercise protocol {info.protocol!r} of the VM biofeedback station"]
    if p.get("reps"):
        parts.append(f"{p['reps']} repetitions")
    if p.get("work_s"):
        parts.append(f"{p['work_s']} s work, {p.get('rest_s', '?')} s rest")
    if p.get("hold_s"):
        parts.append(f"hold {p['hold_s']} s in the target band")
    return "; ".join(parts)


def _write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- the dataset ----------------------------------------------------------------------------


def export(
    db: Backend,
    out: Path,
    recordings: Sequence[Path],
    *,
    patient: str | None = None,
    line_hz: float | None = None,
    name: str = "VM biofeedback sessions",
) -> ExportSummary:
    started = time.perf_counter()
    summary = ExportSummary(out)
    sessions = sessions_of(db, patient)
    if patient is not None and not sessions:
        raise LookupError(f"no sessions of patient {patient!r} in the database")
    files, summary.duplicates = find_recordings(recordings, [s.session_id for s in sessions])
    subjects: dict[str, str] = {}  # label -> patient
    earlier = _participants(out)  # a clash with an earlier export into the same folder too
    for info in sessions:  # every clash before anything is written
        if info.patient is not None:
            label = bids_label(info.patient)
            before = subjects.setdefault(label, earlier.get(label, info.patient))
            if before != info.patient:
                raise ExportError(
                    f"patients {before!r} and {info.patient!r} both make the BIDS "
                    f"label sub-{label}; rename one pseudonym"
                )
    numbers: dict[str, int] = {}
    tasks: set[str] = set()
    session_rows: dict[str, dict[str, list[str]]] = {}
    out.mkdir(parents=True, exist_ok=True)
    for info in sessions:
        if info.patient is None or info.protocol is None:
            summary.skipped.append(
                Skipped(
                    info.session_id,
                    SkipReason.NO_PATIENT,
                    "the session_start message never arrived",
                )
            )
            continue
        sub = bids_label(info.patient)
        numbers[sub] = numbers.get(sub, 0) + 1  # counted for skipped sessions too: stable
        ses = str(numbers[sub])
        found = files.get(info.session_id)
        if found is None:
            summary.skipped.append(
                Skipped(
                    info.session_id, SkipReason.NO_RECORDING, "no .edf/.bdf file names this session"
                )
            )
            continue
        if isinstance(found, NotAnEdfFile):
            summary.skipped.append(
                Skipped(info.session_id, SkipReason.UNREADABLE_RECORDING, str(found))
            )
            continue
        header = read_header(found)
        channels, emg = channel_rows(header, info)
        if not emg:
            summary.skipped.append(
                Skipped(
                    info.session_id,
                    SkipReason.NO_EMG_CHANNEL,
                    f"{found.name}: none of {info.device.get('channels')} among "
                    f"{[s.label for s in header.signals]}",
                )
            )
            continue
        task = bids_label(info.protocol)
        tasks.add(task)
        folder = out / f"sub-{sub}" / f"ses-{ses}" / "emg"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{sub}_ses-{ses}_task-{task}"
        data = folder / f"{stem}_emg{'.bdf' if header.bdf else '.edf'}"
        shutil.copyfile(found, data)
        _write_json(folder / f"{stem}_emg.json", emg_sidecar(header, emg, info, line_hz))
        events = session_events(db, info.session_id, header.rate_hz(emg[0]))
        _channel_status(channels, events, header.duration_s)
        _write_tsv(
            folder / f"{stem}_channels.tsv",
            CHANNEL_COLUMNS,
            ([r[c] for c in CHANNEL_COLUMNS] for r in channels),
        )
        _write_tsv(folder / f"{stem}_events.tsv", EVENT_COLUMNS, (e.row() for e in events))
        summary.events += len(events)
        session_rows.setdefault(sub, {})[f"ses-{ses}"] = _session_row(ses, info)
        summary.exported.append((info.session_id, str(data.relative_to(out))))
    for sub, rows in session_rows.items():
        _write_session_rows(out / f"sub-{sub}", sub, rows)
    done = {label for label in subjects if (out / f"sub-{label}").is_dir()}
    subjects = {label: p for label, p in subjects.items() if label in done}
    summary.subjects = sorted(f"sub-{s}" for s in subjects)
    _write_dataset_files(out, subjects, tasks, name)
    summary.seconds = time.perf_counter() - started
    return summary


def _participants(out: Path) -> dict[str, str]:
    """label -> pseudonym of the participants an earlier export wrote into `out`."""
    path = out / "participants.tsv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {
            r["participant_id"].removeprefix("sub-"): r.get("pseudonym", "")
            for r in csv.DictReader(f, delimiter="\t")
        }


def _session_row(ses: str, info: SessionInfo) -> list[str]:
    when = (
        "n/a"
        if info.started_at is None
        else dt.datetime.fromtimestamp(info.started_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )
    return [f"ses-{ses}", when, info.session_id, info.side or "n/a"]


def _write_session_rows(subject_dir: Path, sub: str, new: dict[str, list[str]]) -> None:
    """`sub-X_sessions.tsv`: the station's session id and the start time of each BIDS session
    (merged with an earlier export's rows by session, so a second export updates, not doubles)."""
    path = subject_dir / f"sub-{sub}_sessions.tsv"
    rows: dict[str, list[str]] = {}
    if path.exists():
        with path.open() as f:
            for r in csv.reader(f, delimiter="\t"):
                if r and r[0] != "session_id":
                    rows[r[0]] = r
    rows.update(new)
    ordered = sorted(rows.values(), key=lambda r: int(r[0].removeprefix("ses-")))
    _write_tsv(path, ("session_id", "acq_time", "source_session", "side"), ordered)


def _write_dataset_files(out: Path, subjects: dict[str, str], tasks: set[str], name: str) -> None:
    try:
        version = importlib.metadata.version("vm-feedback")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without install
        version = "unknown"
    _write_json(
        out / "dataset_description.json",
        {
            "Name": name,
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [
                {
                    "Name": "vm-feedback",
                    "Version": version,
                    "Description": "python -m feedback.clinic.export bids",
                }
            ],
        },
    )
    readme = out / "README"
    if not readme.exists():
        readme.write_text(
            "Surface EMG of vastus medialis retraining sessions, recorded by the VM biofeedback "
            "station and exported from the clinic database.\n"
            "Subjects are the clinic's pseudonyms; no names or birth dates are included.\n"
            "Each emg/ folder holds the station's EDF+/BDF+ record as written (raw EMG channels "
            "plus station-derived envelope, activity, quality and zone signals, typed MISC in "
            "channels.tsv), and events.tsv from the session's messages.\n"
        )
    participants = out / "participants.tsv"
    known: dict[str, list[str]] = {}
    if participants.exists():
        with participants.open() as f:
            known = {
                r[0]: r for r in csv.reader(f, delimiter="\t") if r and r[0] != "participant_id"
            }
    for label, pseudonym in subjects.items():
        known[f"sub-{label}"] = [f"sub-{label}", "homo sapiens", pseudonym]
    _write_tsv(participants, ("participant_id", "species", "pseudonym"), sorted(known.values()))
    _write_json(
        out / "participants.json",
        {
            "pseudonym": {
                "Description": "The clinic's pseudonymous patient id (the BIDS label is "
                "this id with everything but letters and digits removed)."
            },
        },
    )
    for task in tasks:
        _write_json(out / f"task-{task}_events.json", EVENTS_JSON)
    _write_json(
        out / "sessions.json",
        {
            "source_session": {
                "Description": "The station's session id (the clinic database key)."
            },
            "side": {
                "Description": "The leg trained in this session.",
                "Levels": {"left": "left leg", "right": "right leg"},
            },
        },
    )
