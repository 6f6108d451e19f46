"""Replay peak memory on a large file (issue 11: a 2 GB file took 2.2 GB of RSS; goal ≤ 200 MB).

Writes a CSV of `--gb` gigabytes (time column + 3 EMG channels at 2 kHz, like an exported
session), then replays it to the end in a child process (`ReplayDevice`, as fast as it goes,
10 ms blocks as a session takes them) and reports that child's peak RSS (`ru_maxrss`). The peer
in the same run is a child that imports the same modules and opens nothing: the floor that any
replay pays for Python, numpy and pyedflib. Optionally (`--gzip`) the same file gzipped too.

    python -m bench.bench_replay_memory --gb 2 --out bench/results/replay_memory.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 2000
ROWS_PER_BLOCK = 100_000

CHILD = """
import asyncio, json, resource, sys, time
from devices.replay import ReplayDevice
path = sys.argv[1]
async def main():
    t0 = time.perf_counter()
    n = blocks = 0
    if path != "-":
        async with ReplayDevice(path, realtime=False, block_ms=10.0) as device:
            async for b in device.blocks():
                n += b.n_samples
                blocks += 1
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"samples": n, "blocks": blocks, "seconds": time.perf_counter() - t0,
                      "peak_rss_mb": peak_kb / 1024}))
asyncio.run(main())
"""


def write_csv(path: Path, target_bytes: int) -> int:
    """time,VM,VL,VMO rows until the file reaches `target_bytes`; returns the row count."""
    rng = np.random.default_rng(11)
    values = rng.normal(0.0, 0.05, (ROWS_PER_BLOCK, 3))
    tails = [f",{a:.6f},{b:.6f},{c:.6f}\n" for a, b, c in values]  # formatted once, reused
    rows = 0
    with path.open("w") as f:
        f.write("time,VM,VL,VMO\n")
        while f.tell() < target_bytes:
            f.write("".join(f"{(rows + i) / RATE:.4f}{tail}" for i, tail in enumerate(tails)))
            rows += ROWS_PER_BLOCK
    return rows


def replay_in_child(path: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, path],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_replay_memory")
    p.add_argument("--gb", type=float, default=2.0, help="size of the generated CSV (GB)")
    p.add_argument("--dir", type=Path, default=None, help="where to write it (default: a temp dir)")
    p.add_argument("--gzip", action="store_true", help="also replay the file gzipped")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "replay_memory.json")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(dir=args.dir, prefix="replay-bench-"))
    try:
        csv_path = workdir / "big.csv"
        t0 = time.perf_counter()
        rows = write_csv(csv_path, int(args.gb * 1e9))
        size = csv_path.stat().st_size
        print(f"wrote {size / 1e9:.2f} GB, {rows} rows in {time.perf_counter() - t0:.0f} s")
        floor = replay_in_child("-")
        plain = replay_in_child(str(csv_path))
        assert plain["samples"] == rows, (plain, rows)
        result: dict[str, Any] = {
            "benchmark": "replay_memory",
            "command": " ".join(
                [Path(sys.executable).name, "-m", "bench.bench_replay_memory", *sys.argv[1:]]
            ),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "file_bytes": size,
            "rows": rows,
            "channels": 3,
            "peer_import_only_peak_rss_mb": round(floor["peak_rss_mb"], 1),
            "replay_peak_rss_mb": round(plain["peak_rss_mb"], 1),
            "replay_above_peer_mb": round(plain["peak_rss_mb"] - floor["peak_rss_mb"], 1),
            "ratio_to_peer": round(plain["peak_rss_mb"] / floor["peak_rss_mb"], 2),
            "replay_seconds": round(plain["seconds"], 1),
            "replay_mb_per_s": round(size / 1e6 / plain["seconds"], 1),
            "goal_peak_rss_mb": 200,
        }
        if args.gzip:
            gz_path = workdir / "big.csv.gz"
            with csv_path.open("rb") as src, gzip.open(gz_path, "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            packed = replay_in_child(str(gz_path))
            result["gzip_file_bytes"] = gz_path.stat().st_size
            result["gzip_replay_peak_rss_mb"] = round(packed["peak_rss_mb"], 1)
            result["gzip_replay_seconds"] = round(packed["seconds"], 1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
