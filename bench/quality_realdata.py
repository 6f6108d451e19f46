"""How often each signal-quality flag fires on clean real EMG (false flags per minute).

The quality detector (feedback.processing.quality) was built on synthetic faults. Here it runs,
as the pipeline runs it (raw + the chain's band-passed signal), over real recordings in which no
electrode came off and nothing clipped: every flag raised is a false flag. One call per file
gives what block-by-block streaming gives (tests/feedback check the split invariance).

    python -m bench.quality_realdata [DIR ...]     # default: tests/fixtures/data, ../shared/data

Writes bench/results/quality_realdata.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from config.loader import load_settings
from config.settings import Settings
from devices.base import SampleBlock
from devices.recording_formats import Recording, load_recording
from feedback.processing.chain import EmgChain
from feedback.processing.quality import Flag, SignalQuality

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the main checkout (a worktree sits one level deeper).
DEFAULT_DIRS = (
    ROOT / "tests" / "fixtures" / "data",
    ROOT.parent / "shared" / "data",
    ROOT.parents[1] / "shared" / "data",
)
NOT_EMG = {"FX"}  # the UCI goniometer column
FLAGS = (Flag.FLAT, Flag.CLIP, Flag.MAINS, Flag.MOTION)
FLAG_NAMES = tuple(str(f.name) for f in FLAGS)


def recordings(dirs: list[Path]) -> list[Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            name = p.name.removesuffix(".gz")
            if (name.endswith(".txt") and name[0].isdigit()) or name.endswith("_emg.csv"):
                found.setdefault(name, p)  # a fixture and its original are the same bytes
    return sorted(found.values(), key=lambda p: p.name)


def flags_of(rec: Recording, settings: Settings) -> tuple[tuple[str, ...], np.ndarray]:
    rows = [i for i, c in enumerate(rec.channels) if c not in NOT_EMG]
    channels = tuple(rec.channels[i] for i in rows)
    data = np.asarray(rec.data[rows])
    chain = EmgChain(settings.processing, settings.calibration, rec.rate_hz, channels)
    processed = chain.process(SampleBlock(0, 0.0, rec.rate_hz, channels, data))
    quality = SignalQuality(settings.quality, rec.rate_hz, len(channels))
    return channels, quality.process(data, processed.filtered).flags


def count(flags: np.ndarray, minutes: float) -> dict[str, dict[str, float]]:
    """Per flag: raised episodes per channel-minute and the share of time it was up."""
    out = {}
    for flag in FLAGS:
        up = (flags & flag) != 0
        rises = np.count_nonzero(up[:, 1:] & ~up[:, :-1], axis=1) + up[:, 0]
        out[str(flag.name)] = {
            "per_channel_minute": round(float(rises.sum()) / (minutes * up.shape[0]), 3),
            "worst_channel_per_minute": round(float(rises.max()) / minutes, 2),
            "time_pct": round(100.0 * float(up.mean()), 2),
        }
    return out


def run(dirs: list[Path], overrides: dict[str, object] | None = None) -> dict[str, Any]:
    settings = load_settings(environ={}, overrides=overrides or {})
    files: dict[str, Any] = {}
    totals = {str(f.name): 0 for f in FLAGS}
    channel_minutes = 0.0
    for path in recordings(dirs):
        rec = load_recording(path)
        channels, flags = flags_of(rec, settings)
        minutes = rec.n_samples / rec.rate_hz / 60.0
        files[path.name] = {"minutes": round(minutes, 2), "channels": list(channels)}
        files[path.name].update(count(flags, minutes))
        for flag in FLAGS:
            up = (flags & flag) != 0
            totals[str(flag.name)] += int((up[:, 1:] & ~up[:, :-1]).sum() + up[:, 0].sum())
        channel_minutes += minutes * len(channels)
    return {
        "what": "quality flags raised on clean real EMG (every one is a false flag)",
        "settings": {"quality": settings.quality.model_dump(), "overrides": overrides or {}},
        "files": len(files),
        "channel_minutes": round(channel_minutes, 1),
        "false_flags_per_channel_minute": {
            k: round(v / channel_minutes, 4) if channel_minutes else None for k, v in totals.items()
        },
        "by_file": files,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.quality_realdata")
    p.add_argument("dirs", nargs="*", type=Path, default=list(DEFAULT_DIRS))
    args = p.parse_args()
    dirs = [d for d in args.dirs if d.exists()]
    result = {"mains_50": run(dirs), "mains_60": run(dirs, {"quality.mains_hz": 60})}
    out = ROOT / "bench" / "results" / "quality_realdata.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result.items():
        print(f"{name}: {r['files']} files, {r['channel_minutes']} channel-minutes")
        print(f"  false flags per channel-minute: {r['false_flags_per_channel_minute']}")
        for f, row in r["by_file"].items():
            worst = {k: row[k]["worst_channel_per_minute"] for k in FLAG_NAMES}
            print(f"  {f:28s} {worst}")


if __name__ == "__main__":
    main()
