"""Run every benchmark and write one JSON file each to bench/results/."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    bench_clinic,
    bench_devices,
    bench_estop,
    bench_latency,
    bench_processing,
    bench_remote,
    bench_replay,
    bench_startup,
    bench_stim_dashboard,
)

RESULTS = Path(__file__).with_name("results")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument(
        "--only",
        choices=[
            "startup",
            "processing",
            "latency",
            "replay",
            "devices",
            "clinic",
            "remote",
            "estop",
            "stim_dashboard",
        ],
        action="append",
    )
    p.add_argument(
        "--seconds", type=float, default=20.0, help="length of the latency and processing runs"
    )
    p.add_argument(
        "--clinic-messages", type=int, default=200, help="messages per simulated station"
    )
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    chosen = args.only or [
        "startup",
        "processing",
        "latency",
        "replay",
        "devices",
        "clinic",
        "remote",
        "estop",
        "stim_dashboard",
    ]
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if "startup" in chosen:  # first: it measures whole processes, before this one is busy
        write("startup", {**meta, **bench_startup.measure(30)})
    if "processing" in chosen:
        write("processing", {**meta, **bench_processing.run(args.seconds)})
    if "latency" in chosen:
        write("latency", {**meta, **asyncio.run(bench_latency.run(args.seconds))})
    if "replay" in chosen:
        write("replay", {**meta, **bench_replay.run()})
    if "devices" in chosen:
        write("devices", {**meta, **bench_devices.run(min(args.seconds, 10.0))})
    if "clinic" in chosen:
        write("clinic", {**meta, **bench_clinic.run(args.clinic_messages)})
    if "remote" in chosen:
        write("remote", {**meta, **bench_remote.run(min(args.seconds, 10.0))})
    if "estop" in chosen:
        write("estop", {**meta, **bench_estop.run(args.seconds)})
    if "stim_dashboard" in chosen:  # last: it ends the process (see below)
        write("stim_dashboard", {**meta, **bench_stim_dashboard.run()})
        # Qt (PySide6 6.12 + pyqtgraph) can crash in interpreter teardown; results are written.
        # os._exit skips the flush of Python's buffers: do it, so piped output is complete.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def write(name: str, result: dict[str, Any]) -> None:
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{path}:\n{json.dumps(result, indent=2)}")


if __name__ == "__main__":
    main()
