"""Headless replay of the longest UCI recording at speed=max: whole process and in process.

- whole process: `run_feedback.py --headless --device replay:FILE?speed=max` in a fresh
  interpreter (imports, parsing, processing, session log; no broker: a headless replay at full
  speed publishes nothing unless asked), wall and CPU time, best of `repeats`;
- in process, imports done: the same session through `app.run`, and the `Pipeline` alone over
  the device's blocks (500 ms, as the replay uses at full speed, and 1,000 samples);
- the peer, in the same run: scipy alone on the same samples (band-pass `sosfilt` and a moving
  RMS over the whole file, one call each), so the ratio shows what the station adds; and
  NeuroKit2's `emg_process` in process and as a whole process (the `bench` extra, which
  `make bench` installs; without it the figure is reported as not measured, never estimated).

    python -m bench.bench_replay [--repeats 3] [--file PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from scipy import signal

from config.loader import load_settings
from devices.base import SampleBlock
from devices.registry import MAX_SPEED_BLOCK_MS, open_device
from feedback import app
from feedback.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the main checkout (a worktree sits one level deeper).
DATA_DIRS = (ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data")
UCI = "uci-semg-lower-limb"


def longest_uci() -> Path | None:
    """The UCI file with the most samples (lines), or None without the data set."""
    for d in DATA_DIRS:
        if (d / UCI).is_dir():
            files = sorted((d / UCI).rglob("*.txt*"))
            return max(files, key=_lines) if files else None
    return None


def _lines(path: Path) -> int:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for _ in f)


def whole_process(path: Path, repeats: int) -> dict[str, Any]:
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "run_feedback.py", "--headless", "--device",
                 f"replay:{path}?speed=max", "--db", str(Path(tmp) / "s.sqlite3")],
                cwd=ROOT, check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return {"wall_s": round(best_wall, 3), "cpu_s": round(best_cpu, 3)}


def in_process_session(path: Path, repeats: int) -> float:
    settings = load_settings(environ={}, protocol="free")
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull:
            options = app.RunOptions(
                device=f"replay:{path}?speed=max",
                duration_s=None,
                db=str(Path(tmp) / "s.sqlite3"),
                broker="none",
                report=None,
                live_view=False,
            )
            t0 = time.perf_counter()
            asyncio.run(app.run(settings, options, console=Console(file=devnull)))
            best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def blocks_of(path: Path) -> tuple[float, tuple[str, ...], np.ndarray]:
    settings = load_settings(environ={})
    device = open_device(f"replay:{path}?speed=max", settings)

    async def read() -> np.ndarray:
        async with device:
            return np.concatenate([b.data async for b in device.blocks()], axis=1)

    data = asyncio.run(read())
    return device.info.rate_hz, device.info.channels, data


def pipeline_alone(rate: float, channels: tuple[str, ...], data: np.ndarray, step: int) -> float:
    settings = load_settings(environ={}, protocol="free")
    pipe = Pipeline(settings, rate, channels)
    t0 = time.perf_counter()
    for i in range(0, data.shape[1], step):
        pipe.process(SampleBlock(i, 0.0, rate, channels, data[:, i : i + step]))
    return time.perf_counter() - t0


def scipy_peer(rate: float, data: np.ndarray) -> float:
    """Band-pass and a 50 ms moving RMS over the whole file, one call each: the floor."""
    t0 = time.perf_counter()
    sos = signal.butter(4, (20.0, min(450.0, 0.45 * rate)), btype="bandpass", fs=rate, output="sos")
    y = signal.sosfilt(sos, data.astype(np.float64), axis=1)
    width = round(0.05 * rate)
    np.sqrt(signal.lfilter(np.ones(width) / width, 1.0, y * y, axis=1))
    return time.perf_counter() - t0


NEUROKIT_PROCESS = """
import asyncio, sys
import numpy as np
import neurokit2 as nk
from config.loader import load_settings
from devices.registry import open_device
device = open_device(f"replay:{sys.argv[1]}?speed=max", load_settings(environ={}))
async def read():
    async with device:
        return np.concatenate([b.data async for b in device.blocks()], axis=1)
for row in asyncio.run(read()).astype(np.float64):
    nk.emg_process(row, sampling_rate=int(device.info.rate_hz))
"""


def neurokit(path: Path, rate: float, data: np.ndarray, repeats: int) -> dict[str, Any] | str:
    """NeuroKit2's `emg_process` on every channel: in process (imports done), and as a whole
    process that reads the file with the station's own reader (the same parse cost as ours)."""
    try:
        import neurokit2 as nk  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "not measured: neurokit2 is not installed (make bench installs the bench extra)"
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for row in data.astype(np.float64):
            nk.emg_process(row, sampling_rate=int(rate))
        best = min(best, time.perf_counter() - t0)
    whole, whole_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", NEUROKIT_PROCESS, str(path)], cwd=ROOT,
                       check=True, capture_output=True, timeout=600)  # fmt: skip
        whole = min(whole, time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        whole_cpu = min(whole_cpu, cpu)
    return {
        "version": nk.__version__,
        "emg_process_all_channels_s": round(best, 3),
        "whole_process_wall_s": round(whole, 3),
        "whole_process_cpu_s": round(whole_cpu, 3),
    }


def run(repeats: int = 3, path: Path | None = None) -> dict[str, Any]:
    path = path or longest_uci()
    if path is None:
        return {"skipped": f"no {UCI} under {[str(d) for d in DATA_DIRS]}"}
    rate, channels, data = blocks_of(path)
    big = round(MAX_SPEED_BLOCK_MS * rate / 1000)
    best = {
        f"{big}_sample_blocks_s": min(pipeline_alone(rate, channels, data, big)
                                      for _ in range(repeats)),
        "1000_sample_blocks_s": min(pipeline_alone(rate, channels, data, 1000)
                                    for _ in range(repeats)),
        "20_sample_blocks_s": pipeline_alone(rate, channels, data, 20),
    }  # fmt: skip
    peer = min(scipy_peer(rate, data) for _ in range(repeats))
    whole = whole_process(path, repeats)
    session = in_process_session(path, repeats)
    seconds = data.shape[1] / rate
    out: dict[str, Any] = {
        "what": f"{path.name}: {data.shape[1]} samples x {len(channels)} channels "
        f"({', '.join(channels)}) at {rate:.0f} Hz = {seconds:.1f} s of signal; best of "
        f"{repeats}; headless, speed=max, no broker",
        "whole_process": {**whole, "x_realtime": round(seconds / whole["wall_s"], 1)},
        "in_process_session_s": session,
        "in_process_pipeline": {k: round(v, 4) for k, v in best.items()},
        "peer_scipy_bandpass_rms_whole_file_s": round(peer, 4),
        "ratio_pipeline_1000_sample_blocks_vs_scipy_peer": round(
            best["1000_sample_blocks_s"] / peer, 1
        ),
    }
    nk = neurokit(path, rate, data, repeats)
    out["neurokit2"] = nk
    if isinstance(nk, dict):  # the measures: how many times faster than NeuroKit2
        out["x_faster_than_neurokit2_whole_process"] = round(
            nk["whole_process_wall_s"] / whole["wall_s"], 2
        )
        # CPU time as well: on a shared machine the wall times swing with the load (NeuroKit2's
        # import-heavy process more than ours), the CPU times much less.
        out["x_faster_than_neurokit2_whole_process_cpu"] = round(
            nk["whole_process_cpu_s"] / whole["cpu_s"], 2
        )
        out["x_faster_than_neurokit2_in_process_1000_sample_blocks"] = round(
            nk["emg_process_all_channels_s"] / best["1000_sample_blocks_s"], 1
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_replay")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--file", type=Path)
    args = p.parse_args()
    print(json.dumps(run(args.repeats, args.file), indent=2))


if __name__ == "__main__":
    main()
