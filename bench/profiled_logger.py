"""The clinic logger with its CPU accounted per thread (`bench.loadtest --profile DIR`).

python -m bench.profiled_logger DIR [cprofile] -- <logger arguments>

At exit it writes DIR/threads-<pid>.json: CPU seconds of each thread by its Python name (paho's
network thread, the asyncio loop, the executor threads that run the store and the intake's
`take`), read from /proc when each thread ends. With `cprofile`, each thread also runs under
cProfile (DIR/<thread>-<pid>.prof): it slows the Python parts, so its split is relative; the
thread CPU seconds of a run without it are the ones to quote.
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

_cpu: dict[str, float] = {}
_lock = threading.Lock()


def thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    out = Path(sys.argv[1])
    profile = sys.argv[2] == "cprofile"
    args = sys.argv[sys.argv.index("--") + 1 :]
    out.mkdir(parents=True, exist_ok=True)
    run = threading.Thread.run

    def counted_run(self: threading.Thread) -> None:
        prof = cProfile.Profile() if profile else None
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
    from feedback.clinic.logger import main as logger_main

    prof = cProfile.Profile() if profile else None
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
