"""Checks of an exported BIDS-EMG dataset that the BIDS validator does not make.

The validator (bids-validator-deno) checks names, required sidecar keys and TSV columns, but
not the data file against its sidecars: a channels.tsv one row short, or an EMGChannelCount
that disagrees with it, is at most a warning there. `check_dataset` reads every data file's
header and compares; `run_validator` runs the validator and returns its issues. The export tests
use both (docs/bids.md).
"""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback.clinic.bids import REQUIRED_EMG_JSON
from feedback.clinic.edf_header import EdfHeader, NotAnEdfFile, read_header


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    code: str
    message: str


@dataclass(slots=True)
class _Findings:
    """Problems with paths relative to the dataset root, in the order they were found."""

    root: Path
    problems: list[Problem] = field(default_factory=list)

    def bad(self, path: Path, code: str, message: str) -> None:
        self.problems.append(Problem(str(path.relative_to(self.root)), code, message))


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def check_dataset(root: Path) -> list[Problem]:
    found = _Findings(root)
    if not (root / "dataset_description.json").is_file():
        found.problems.append(
            Problem("dataset_description.json", "MISSING", "no dataset description")
        )
    data_files = sorted(
        p for p in root.glob("sub-*/ses-*/emg/*_emg.*") if p.suffix.lower() in (".edf", ".bdf")
    )
    for data in data_files:
        _check_recording(found, data)
    _check_orphan_sidecars(found)
    _check_participants(found)
    return found.problems


def _check_recording(found: _Findings, data: Path) -> None:
    """One data file against its sidecar, channels.tsv and events.tsv."""
    stem = data.name.removesuffix(data.suffix).removesuffix("_emg")
    try:
        header = read_header(data)
    except NotAnEdfFile as exc:
        found.bad(data, "UNREADABLE_DATA", str(exc))
        return
    sidecar = data.with_suffix(".json")
    meta = _check_sidecar(found, data, sidecar)
    channels = data.with_name(f"{stem}_channels.tsv")
    if not channels.is_file():
        found.bad(data, "MISSING_CHANNELS", f"no {channels.name}")
        return
    _check_channels(found, data, header, channels, sidecar, meta)
    _check_events(found, data, header, data.with_name(f"{stem}_events.tsv"))


def _check_sidecar(found: _Findings, data: Path, sidecar: Path) -> dict[str, Any]:
    """The sidecar's metadata ({} when it is missing) after checking its required keys."""
    if not sidecar.is_file():
        found.bad(data, "MISSING_SIDECAR", f"no {sidecar.name}")
        return {}
    meta: dict[str, Any] = json.loads(sidecar.read_text())
    needed = list(REQUIRED_EMG_JSON)
    if meta.get("EMGPlacementScheme") == "Other":
        needed.append("EMGPlacementSchemeDescription")
    for key in needed:
        if meta.get(key) in ("", None):
            found.bad(sidecar, "SIDECAR_KEY_REQUIRED", f"{key} missing")
    return meta


def _check_channels(
    found: _Findings,
    data: Path,
    header: EdfHeader,
    channels: Path,
    sidecar: Path,
    meta: dict[str, Any],
) -> None:
    rows = _tsv(channels)
    names = [r.get("name", "") for r in rows]
    labels = [s.label for s in header.signals]
    if names != labels:
        found.bad(
            channels,
            "CHANNELS_MISMATCH",
            f"{len(names)} rows {names} for {len(labels)} signals {labels} in {data.name}",
        )
    emg = [r for r in rows if r.get("type") == "EMG"]
    if "EMGChannelCount" in meta and meta["EMGChannelCount"] != len(emg):
        found.bad(
            sidecar,
            "EMG_CHANNEL_COUNT_MISMATCH",
            f"EMGChannelCount {meta['EMGChannelCount']}, channels.tsv {len(emg)} EMG rows",
        )
    by_label = {s.label: s for s in header.signals}
    for r in emg:
        s = by_label.get(r.get("name", ""))
        if s is not None and meta.get("SamplingFrequency") not in (None, header.rate_hz(s)):
            found.bad(
                sidecar,
                "SAMPLING_FREQUENCY_MISMATCH",
                f"SamplingFrequency {meta['SamplingFrequency']}, {s.label} is sampled at "
                f"{header.rate_hz(s)} Hz",
            )


def _check_events(found: _Findings, data: Path, header: EdfHeader, events: Path) -> None:
    if not events.is_file():
        found.bad(data, "MISSING_EVENTS", f"no {events.name}")
        return
    for i, e in enumerate(_tsv(events), 2):
        try:
            onset = float(e["onset"])
            if e["duration"] != "n/a":
                float(e["duration"])
        except (KeyError, ValueError):
            found.bad(events, "EVENTS_MALFORMED", f"line {i}: onset/duration not numbers")
            continue
        if not 0 <= onset <= header.duration_s:
            found.bad(
                events,
                "EVENT_OUTSIDE_RECORDING",
                f"line {i}: onset {onset} s outside 0..{header.duration_s} s",
            )


def _check_orphan_sidecars(found: _Findings) -> None:
    for sidecar in found.root.glob("sub-*/ses-*/emg/*_emg.json"):
        if not any(sidecar.with_suffix(x).is_file() for x in (".edf", ".bdf")):
            found.bad(sidecar, "SIDECAR_WITHOUT_DATAFILE", "no .edf/.bdf beside it")


def _check_participants(found: _Findings) -> None:
    participants = found.root / "participants.tsv"
    listed = {r["participant_id"] for r in _tsv(participants)} if participants.is_file() else set()
    for subject in found.root.glob("sub-*"):
        if subject.is_dir() and subject.name not in listed:
            found.bad(subject, "PARTICIPANT_MISSING", f"{subject.name} not in participants.tsv")


def run_validator(root: Path, executable: Path, timeout_s: float = 120) -> list[dict[str, Any]]:
    """The validator's issues (dicts with severity, code, location, subCode)."""
    done = subprocess.run(
        [str(executable), str(root), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"bids-validator exit {done.returncode}: {done.stderr[-2000:] or done.stdout[-2000:]}"
        ) from exc
    issues: list[dict[str, Any]] = report["issues"]["issues"]
    return issues
