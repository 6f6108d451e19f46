"""Measures the AVR build under simavr: `python firmware/sim/measure.py [--seconds S]`.

For each sample rate x channels x UART speed it builds the image, runs it (as fast as the PC
allows, the clock is the simulated one) with a host reading the pty and sending heartbeats, and
prints one JSON line: samples received, gaps, protocol errors, the worst interrupt durations in
CPU cycles, and flash/RAM. README.md's table comes from this.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "firmware_c")]

from avr_sim import AvrSim, PtyHost  # noqa: E402
from vmf_c import build  # noqa: E402

from firmware_bridge import SampleFrame  # noqa: E402

CONFIGS = [
    # (rate Hz, channels, baud)
    (2000, 2, 115200),
    (2000, 2, 500000),
    (2500, 2, 500000),
    (4000, 2, 500000),
    (8000, 1, 500000),
    (4000, 2, 1000000),
    # beyond the UART: these must show gaps (and the ADC-overrun DeviceError), not hide them
    (2500, 2, 115200),
    (4000, 2, 115200),
]


def measure(rate: int, channels: int, baud: int, seconds: float) -> dict[str, object]:
    variables = {"AVR_RATE": str(rate), "AVR_CHANNELS": str(channels), "AVR_BAUD": str(baud)}
    try:
        elf = build("avr", **variables)
    except AssertionError as exc:
        return {"rate_hz": rate, "channels": channels, "baud": baud, "build": str(exc)[-200:]}
    size = subprocess.run(["avr-size", str(elf)], capture_output=True, text=True, check=True)
    text, data, bss = (int(x) for x in size.stdout.splitlines()[1].split()[:3])
    with AvrSim(elf, speed=0) as sim:
        host = PtyHost(sim.path)
        host.hello()
        first = sim.stats()["t_s"]
        while (stats := sim.stats())["t_s"] - first < seconds:
            host.pump(0.2, heartbeat_s=0.05)
        host.pump(0.3)
        host.close()
    frames = host.of_type(SampleFrame)
    return {
        "rate_hz": rate,
        "channels": channels,
        "baud": baud,
        "simulated_s": round(stats["t_s"] - first, 2),
        "samples": sum(f.n_samples for f in frames),
        "gaps": host.conn.stats.sample_gaps,
        "samples_lost": host.conn.stats.samples_lost,
        "protocol_errors": host.conn.stats.errors,
        "device_errors": sum(1 for e in host.events if type(e).__name__ == "DeviceError"),
        "isr_max_cycles": {k: v["max_cycles"] for k, v in stats["isr"].items()},
        "flash_bytes": text + data,
        "ram_bytes": data + bss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds each")
    parser.add_argument("--only", type=int, nargs="*", help="indices into CONFIGS")
    args = parser.parse_args()
    for i, (rate, channels, baud) in enumerate(CONFIGS):
        if args.only and i not in args.only:
            continue
        print(json.dumps(measure(rate, channels, baud, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
