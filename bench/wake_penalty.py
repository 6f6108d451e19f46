"""What the machine charges a process for waking: tiny operations timed back to back, and each
right after a 10 ms sleep (the station's cadence between blocks).

On this project's machine (a KVM guest, two vCPUs of a shared host) on 2026-12-02 an operation
right after a 10 ms sleep took 40-130 times as long as back to back (`time.time()` 0.1-0.15 →
8-11 µs, `np.empty` 0.3-0.5 → 36 µs) and the station's block 9-14 times (`--block`:
`Pipeline.process` on 4 × 20 samples, 24-37 → 340-350 µs). Waiting the 10 ms in a loop
instead (`--busy`) took off only a fifth (the block 281 µs): most of it is not the guest's idle
state; the likeliest cause is other work on the vCPU's physical core meanwhile, which a guest
cannot see. Every latency bench here is read against this figure: the station's work between a
sample's arrival and its cue is paid at this rate.

    python -m bench.wake_penalty [--busy] [--block]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

GAP_S = 0.01


def _dict() -> object:
    return {"kind": "cue", "value": 1, "band": [0.4, 0.6]}


def _empty() -> object:
    return np.empty((4, 4, 20))


OPERATIONS: dict[str, Callable[[], object]] = {
    "time.time()": time.time,
    "a small dict": _dict,
    "np.empty((4, 4, 20))": _empty,
}


def _pipeline_block() -> Callable[[], object]:
    """The station's block: `Pipeline.process` on bench_processing's blocks (4 × 20 samples)."""
    from bench.bench_processing import BLOCK, CHANNELS, RATE, noise
    from config.loader import load_settings
    from devices.base import SampleBlock
    from feedback.pipeline import Pipeline, compile_kernels

    settings = load_settings(environ={})
    compile_kernels(settings)
    pipe = Pipeline(settings, RATE, CHANNELS)
    data = noise(10.0)
    blocks = data.shape[1] // BLOCK
    at = 0

    def block() -> object:
        nonlocal at
        i = at % blocks  # (the signal repeats; the pipeline's index runs on)
        chunk = data[:, i * BLOCK : (i + 1) * BLOCK]
        at += 1
        return pipe.process(SampleBlock((at - 1) * BLOCK, 0.0, RATE, CHANNELS, chunk))

    return block


def _wait(gap_s: float, busy: bool) -> None:
    if not busy:
        time.sleep(gap_s)
        return
    end = time.perf_counter() + gap_s
    while time.perf_counter() < end:
        pass


def _timed(op: Callable[[], object], n: int, gap_s: float, busy: bool = False) -> float:
    """The median of `n` single calls (µs), each after waiting `gap_s` (0: back to back)."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        if gap_s:
            _wait(gap_s, busy)
        t0 = clock()
        op()
        samples.append(clock() - t0)
    return round(float(np.median(samples)) / 1e3, 2)


def wake_penalty(n: int = 150, *, busy: bool = False, block: bool = False) -> dict[str, object]:
    wait = "busy wait" if busy else "sleep"
    out: dict[str, object] = {
        "what": f"median µs of one call, back to back and right after a {GAP_S * 1e3:.0f} ms "
        f"{wait}; the ratio is what waking costs on this machine"
    }
    ops = dict(OPERATIONS)
    if block:
        ops["Pipeline.process, 4 x 20 samples"] = _pipeline_block()
    for name, op in ops.items():
        _timed(op, 20, 0.0)  # (a first pass loads what the first call needs)
        hot, woken = _timed(op, n, 0.0), _timed(op, n, GAP_S, busy)
        out[name] = {"hot_us": hot, "after_wait_us": woken, "ratio": round(woken / hot, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.wake_penalty")
    p.add_argument("--busy", action="store_true", help="wait in a loop instead of sleeping")
    p.add_argument("--block", action="store_true", help="time the station's block too")
    args = p.parse_args()
    print(json.dumps(wake_penalty(busy=args.busy, block=args.block), indent=2))


if __name__ == "__main__":
    main()
