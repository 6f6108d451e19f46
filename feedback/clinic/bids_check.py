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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.clinic.bids import REQUIRED_EMG_JSON
from feedback.clinic.edf_header import NotAnEdfFile, read_header


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    code: str
    message: str


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def check_dataset(root: Path) -> list[Problem]:
    problems: list[Problem] = []

    def bad(path: Path, code: str, message: str) -> None:
        problems.append(Problem(str(path.relative_to(root)), code, message))

    description = root / "dataset_description.json"
    if not description.is_file():
        problems.append(Problem("dataset_description.json", "MISSING", "no dataset description"))
    data_files = sorted(
        p for p in root.glob("sub-*/ses-*/emg/*_emg.*") if p.suffix.lower() in (".edf", ".bdf")
    )
    for data in data_files:
        stem = data.name.removesuffix(data.suffix).removesuffix("_emg")
        sidecar, channels = data.with_suffix(".json"), data.with_name(f"{stem}_channels.tsv")
        events = data.with_name(f"{stem}_events.tsv")
        try:
            header = read_header(data)
        except NotAnEdfFile as exc:
            bad(data, "UNREADABLE_DATA", str(exc))
            continue
        meta: dict[str, Any] = {}
        if not sidecar.is_file():
            bad(data, "MISSING_SIDECAR", f"no {sidecar.name}")
        else:
            meta = json.loads(sidecar.read_text())
            needed = list(REQUIRED_EMG_JSON)
            if meta.get("EMGPlacementScheme") == "Other":
                needed.append("EMGPlacementSchemeDescription")
            for key in needed:
                if key not in meta or meta[key] in ("", None):
                    bad(sidecar, "SIDECAR_KEY_REQUIRED", f"{key} missing")
        if not channels.is_file():
            bad(data, "MISSING_CHANNELS", f"no {channels.name}")
            continue
        rows = _tsv(channels)
        names = [r.get("name", "") for r in rows]
        labels = [s.label for s in header.signals]
        if names != labels:
            bad(
                channels,
                "CHANNELS_MISMATCH",
                f"{len(names)} rows {names} for {len(labels)} signals {labels} in {data.name}",
            )
        emg = [r for r in rows if r.get("type") == "EMG"]
        if "EMGChannelCount" in meta and meta["EMGChannelCount"] != len(emg):
            bad(
                sidecar,
                "EMG_CHANNEL_COUNT_MISMATCH",
                f"EMGChannelCount {meta['EMGChannelCount']}, channels.tsv {len(emg)} EMG rows",
            )
        by_label = {s.label: s for s in header.signals}
        for r in emg:
            s = by_label.get(r.get("name", ""))
            if s is not None and meta.get("SamplingFrequency") not in (None, header.rate_hz(s)):
                bad(
                    sidecar,
                    "SAMPLING_FREQUENCY_MISMATCH",
                    f"SamplingFrequency {meta['SamplingFrequency']}, {s.label} is sampled at "
                    f"{header.rate_hz(s)} Hz",
                )
        if not events.is_file():
            bad(data, "MISSING_EVENTS", f"no {events.name}")
        else:
            for i, e in enumerate(_tsv(events), 2):
                try:
                    onset = float(e["onset"])
                    if e["duration"] != "n/a":
                        float(e["duration"])
                except (KeyError, ValueError):
                    bad(events, "EVENTS_MALFORMED", f"line {i}: onset/duration not numbers")
                    continue
                if not 0 <= onset <= header.duration_s:
                    bad(
                        events,
                        "EVENT_OUTSIDE_RECORDING",
                        f"line {i}: onset {onset} s outside 0..{header.duration_s} s",
                    )
    for sidecar in root.glob("sub-*/ses-*/emg/*_emg.json"):
        if not any(sidecar.with_suffix(x).is_file() for x in (".edf", ".bdf")):
            bad(sidecar, "SIDECAR_WITHOUT_DATAFILE", "no .edf/.bdf beside it")
    participants = root / "participants.tsv"
    listed = {r["participant_id"] for r in _tsv(participants)} if participants.is_file() else set()
    for subject in root.glob("sub-*"):
        if subject.is_dir() and subject.name not in listed:
            bad(subject, "PARTICIPANT_MISSING", f"{subject.name} not in participants.tsv")
    return problems


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
