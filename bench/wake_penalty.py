"""What the machine charges a process for waking: tiny operations timed back to back, and each
right after a 10 ms sleep (the station's cadence between blocks).

On this project's machine (KVM guest, two vCPUs on a shared host) an operation run right after
a 10 ms sleep took 20-75 times as long as back to back: `time.time()` 0.14 → 10.7 µs,
`np.empty` 0.65 → 36 µs, the station's whole block 24 → 340 µs. A 10 ms busy wait instead of
the sleep gave the same, so it is not the guest's idle state: the host runs others on the
vCPU's core meanwhile. Every latency bench here is read against this figure.

    python -m bench.wake_penalty
"""

from __future__ import annotations

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


def _timed(op: Callable[[], object], n: int, gap_s: float) -> float:
    """The median of `n` single calls (µs), each after `gap_s` of sleep (0: back to back)."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        t0 = clock()
        op()
        samples.append(clock() - t0)
    return round(float(np.median(samples)) / 1e3, 2)


def wake_penalty(n: int = 150) -> dict[str, object]:
    out: dict[str, object] = {
        "what": f"median µs of one call, back to back and right after a {GAP_S * 1e3:.0f} ms "
        "sleep; the ratio is what waking costs on this machine"
    }
    for name, op in OPERATIONS.items():
        _timed(op, 20, 0.0)  # (a first pass loads what the first call needs)
        hot, woken = _timed(op, n, 0.0), _timed(op, n, GAP_S)
        out[name] = {"hot_us": hot, "after_sleep_us": woken, "ratio": round(woken / hot, 1)}
    return out


if __name__ == "__main__":
    print(json.dumps(wake_penalty(), indent=2))
