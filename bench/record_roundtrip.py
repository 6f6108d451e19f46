"""Round trip of the session record (issue 16): record → EDF+ and BDF+ → pyedflib and MNE.

    python -m bench.record_roundtrip [--seconds 10]     → bench/results/record_roundtrip.json

Two sources: the simulator (with a device gap of three blocks and one stimulation burst) and a
real UCI recording (tests/fixtures/data/7Nmar.txt.gz, replayed). Each is processed once and
recorded as EDF+ and as BDF+ with the station's own recorder; each file is read back with
pyedflib and with MNE (`read_raw_edf` / `read_raw_bdf`): the largest sample error in steps of
the file's resolution (must be ≤ 1 LSB) and whether the annotations are equal (onset, duration,
text). Write time (put + close, fsync per record as in a session) and file size per format.
Exit status 1 when any round trip fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from config.loader import load_settings
from config.settings import Settings
from devices.base import SampleBlock
from devices.registry import open_device
from feedback.outputs.record_check import check_mne, check_pyedflib, record, ticks_of

RESULTS = Path(__file__).with_name("results")
UCI = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "data" / "7Nmar.txt.gz"
GAP_BLOCKS = frozenset({300, 301, 302})
STIM = {
    "blank_from": 5000,
    "ramp_up_ms": 500,
    "hold_ms": 2000,
    "ramp_down_ms": 500,
    "burst": 1,
    "channel": 0,
    "amplitude_ma": 20.0,
    "pulse_width_us": 300,
    "frequency_hz": 50,
}


async def _blocks(spec: str, settings: Settings, limit: int | None) -> list[SampleBlock]:
    out: list[SampleBlock] = []
    async with open_device(spec, settings) as device:
        async for block in device.blocks():
            out.append(block)
            if limit is not None and len(out) >= limit:
                break
    return out


def with_format(settings: Settings, fmt: str) -> Settings:
    rec = settings.recording.model_copy(update={"format": fmt})
    return settings.model_copy(update={"recording": rec})


def run(seconds: float, out_dir: Path) -> dict[str, Any]:
    settings = load_settings(environ={})
    n_sim = round(seconds * 1000 / settings.device.block_ms)
    sources = {
        "simulator": (
            ticks_of(asyncio.run(_blocks("sim?speed=max", settings, n_sim)), settings, GAP_BLOCKS),
            [STIM],
        ),
        "uci_7Nmar": (
            ticks_of(
                asyncio.run(
                    _blocks(f"replay:{UCI}?speed=max&channels=VM=VM,BF=BF", settings, None)
                ),
                settings,
            ),
            [],
        ),
    }
    results: list[dict[str, Any]] = []
    for name, (ticks, stim) in sources.items():
        for fmt in ("edf", "bdf"):
            expected = record(
                ticks, out_dir / f"{name}_{fmt}.rec", with_format(settings, fmt), stim=stim
            )
            row: dict[str, Any] = {
                "source": name,
                "format": fmt,
                "seconds": round(expected.samples.shape[1] / expected.rate_hz, 3),
                "rate_hz": expected.rate_hz,
                "write_s": round(expected.write_s, 4),
                "bytes": expected.path.stat().st_size,
                "annotations": len(expected.annotations),
                "readers": [check_pyedflib(expected).as_dict(), check_mne(expected).as_dict()],
            }
            results.append(row)
    return {"runs": results, "ok": all(r["ok"] for row in results for r in row["readers"])}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.record_roundtrip")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the simulator run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args.seconds, Path(tmp))
    report = {
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "gap_blocks": sorted(GAP_BLOCKS),
        **report,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "record_roundtrip.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["runs"]:
        for r in row["readers"]:
            print(
                f"{row['source']:<10} {row['format']}  {r['reader']:<8} "
                f"max error {r['max_lsb_error']:.2f} LSB  annotations "
                f"{r['annotations_read']}/{r['annotations_expected']} "
                f"{'equal' if r['annotations_equal'] else 'DIFFER'}  "
                f"write {row['write_s'] * 1000:.0f} ms  {row['bytes'] / 1e6:.2f} MB"
            )
    print(f"→ {path}")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
