"""The clinic logger with its CPU accounted per thread (`bench.loadtest --profile DIR`).

python -m bench.profiled_logger DIR [cprofile|cputime|stages|plain] -- <logger arguments>

With `--nats` among the logger's arguments it runs the NATS logger (feedback.clinic.nats_logger;
`BENCH_NATS_PROFILE=DIR:MODE python -m bench.bench_nats ...` starts its loggers this way), else
the MQTT one.

At exit it writes DIR/threads-<pid>.json: CPU seconds of each thread by its Python name (paho's
network thread, the asyncio loop, the executor threads that run the store and the intake's
`take`), read from /proc when each thread ends. With `cprofile`, each thread also runs under
cProfile (DIR/<thread>-<pid>.prof): it slows the Python parts, so its split is relative; the
thread CPU seconds of a run without it are the ones to quote. With `stages`, the CPU time of
the store's phases and the intake's calls is added up too (`stage:...`, thread CPU time).
"""

from __future__ import annotations

import atexit
import cProfile
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

_cpu: dict[str, float] = {}
_lock = threading.Lock()


def thread_cpu_s(native_id: int) -> float:
    # schedstat: nanoseconds on the CPU (stat's clock ticks round a short thread to 0)
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9


def _record(name: str) -> None:
    used = thread_cpu_s(threading.get_native_id())
    if name.startswith("paho"):
        key = "paho"  # the network thread: read, decode, PUBACK, receipts out
    elif name.startswith("asyncio_"):
        key = "executor"  # the store's ingest and the intake's take
    elif "(" in name:
        key = name.split("(", 1)[1].rstrip(")")  # Thread-N (target)
    else:
        key = name
    with _lock:
        _cpu[key] = _cpu.get(key, 0.0) + used


def _count_stages() -> None:
    """CPU seconds spent inside the store's phases, the intake's calls and the main thread's
    per-batch work (stage counters; a thread's CPU time, so waiting is left out)."""
    import time

    from feedback.clinic import intake, logger, metrics, store

    def counted(owner: Any, name: str, stage: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                with _lock:
                    _cpu[stage] = _cpu.get(stage, 0.0) + time.thread_time() - t0

        setattr(owner, name, wrapper)

    counted(store.ClinicStore, "ingest", "stage:store.ingest")
    counted(store.ClinicStore, "check_ahead", "stage:store.check_ahead (validation)")
    counted(store.ClinicStore, "_fold_live", "stage:store.fold_live")
    counted(store.ClinicStore, "_claim_all", "stage:store.claim_all")
    counted(store.ClinicStore, "_deliveries", "stage:store.deliveries")
    counted(intake.PahoIntake, "take", "stage:intake.take")
    counted(intake.PahoIntake, "ack", "stage:intake.ack")
    counted(logger.ClinicLogger, "_answer", "stage:logger.answer (receipts)")
    counted(metrics.LoggerMetrics, "batch", "stage:metrics.batch")
    counted(metrics.LoggerMetrics, "collect", "stage:metrics.collect (scrapes)")


def _count_collections() -> None:
    """CPU seconds the cyclic garbage collector takes, by generation (`gc:<gen>`), in every
    mode: a batch of a thousand messages makes tens of thousands of objects."""
    started: dict[int, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            started[ident] = time.thread_time()
            return
        t0 = started.pop(ident, None)
        if t0 is not None:
            key = f"gc:{info['generation']}"
            with _lock:
                _cpu[key] = _cpu.get(key, 0.0) + time.thread_time() - t0
                _cpu[key + " count"] = _cpu.get(key + " count", 0) + 1

    gc.callbacks.append(callback)


def main() -> None:
    out = Path(sys.argv[1])
    profile = sys.argv[2] in ("cprofile", "cputime")
    # cputime: each thread's profile in its own CPU time (time.thread_time), so that a thread
    # waiting for the GIL or the network is not charged; slower still, for the split only.
    timer = time.thread_time if sys.argv[2] == "cputime" else None
    if sys.argv[2] == "stages":
        _count_stages()
    _count_collections()
    args = sys.argv[sys.argv.index("--") + 1 :]
    out.mkdir(parents=True, exist_ok=True)
    run = threading.Thread.run

    def counted_run(self: threading.Thread) -> None:
        prof = (cProfile.Profile(timer) if timer else cProfile.Profile()) if profile else None
        try:
            if prof is not None:
                prof.enable()
            run(self)
        finally:
            if prof is not None:
                prof.disable()
                prof.dump_stats(out / f"{self.name}-{os.getpid()}.prof")
            _record(self.name)

    threading.Thread.run = counted_run  # type: ignore[method-assign]

    def dump() -> None:
        _record("main")
        (out / f"threads-{os.getpid()}.json").write_text(json.dumps(_cpu, indent=1))

    atexit.register(dump)
    if "--nats" in args:
        from feedback.clinic.nats_logger import main as logger_main
    else:
        from feedback.clinic.logger import main as logger_main

    prof = (cProfile.Profile(timer) if timer else cProfile.Profile()) if profile else None
    if prof is not None:
        prof.enable()
    try:
        code: Any = logger_main(args)
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(out / f"main-{os.getpid()}.prof")
    sys.exit(code)


if __name__ == "__main__":
    main()
