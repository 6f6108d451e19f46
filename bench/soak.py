"""Soak: what runs for long in use runs for long here, with memory (and frame rate) at the end
checked against the start.

  python -m bench.soak dashboard --minutes 10     the station with its dashboard, a live session
  python -m bench.soak session --hours 4          a 4-hour session at sim?speed=max
  python -m bench.soak logger --minutes 10        the clinic logger under steady load

Each writes bench/results/soak-<name>.json. `make soak` runs the three at full length through
tests/soak/test_soak.py; the fast suite runs short versions of the same functions. Memory is the
resident set (VmRSS) of the real processes, sampled from outside every second; "growth" is the
slope of a straight line fitted to the samples after the warm-up, so one late spike (a garbage
collection, a batch) does not decide it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from feedback.dashboard.process import rss_kb

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STATUS_LINE = re.compile(r"dashboard: (\d+) frames drawn, (\d+) kB")
LONG_PROTOCOL = {"VMF_PROTOCOL__REPS": "200", "VMF_PROTOCOL__SETS": "10"}  # 5.7 h of exercise


def growth_kb_per_hour(t_s: list[float], kb: list[float], warmup: float = 0.25) -> float:
    """Slope of a line through the samples after the first `warmup` share of the run."""
    if len(t_s) < 4:
        return 0.0
    t, v = np.asarray(t_s), np.asarray(kb, dtype=float)
    keep = t >= t[0] + warmup * (t[-1] - t[0])
    if keep.sum() < 3:
        return 0.0
    slope = np.polyfit(t[keep], v[keep], 1)[0]
    return float(slope * 3600.0)


def memory_summary(t_s: list[float], kb: list[float], warmup: float = 0.25) -> dict[str, Any]:
    if not kb:
        return {"samples": 0}
    t = np.asarray(t_s)
    after = int(np.searchsorted(t, t[0] + warmup * (t[-1] - t[0])))
    return {
        "samples": len(kb),
        "start_kb": int(kb[0]),
        "after_warmup_kb": int(kb[min(after, len(kb) - 1)]),
        "end_kb": int(kb[-1]),
        "peak_kb": int(max(kb)),
        "growth_kb_per_hour": round(growth_kb_per_hour(t_s, kb, warmup)),
    }


def dashboard_children(pid: int) -> list[int]:
    """The spawned dashboard process(es) of a station (not multiprocessing's resource tracker)."""
    out = subprocess.run(
        ["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [
        int(line.split()[0])
        for line in out.splitlines()
        if "multiprocessing.spawn" in line and "resource_tracker" not in line
    ]


class Sampler:
    """RSS of some processes every `period_s`, in a thread, until stopped."""

    def __init__(self, pids: Callable[[], dict[str, int | None]], period_s: float = 1.0) -> None:
        self.pids = pids
        self.period_s = period_s
        self.t0 = time.monotonic()
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = time.monotonic() - self.t0
            for name, pid in self.pids().items():
                kb = rss_kb(pid) if pid else 0
                if kb:
                    t, v = self.series.setdefault(name, ([], []))
                    t.append(now)
                    v.append(kb)

    def summary(self, name: str, warmup: float = 0.25) -> dict[str, Any]:
        t, v = self.series.get(name, ([], []))
        return memory_summary(t, v, warmup)


def _station(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run_feedback.py"),
            "--db",
            "s.db",
            "--report",
            "r.json",
            *args,
        ],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "QT_QPA_PLATFORM": "offscreen", **(env or {})},
    )


def _write(name: str, result: dict[str, Any]) -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result["written"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / f"soak-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# -- the dashboard drawing a live session -------------------------------------------------------


def soak_dashboard(seconds: float, name: str = "dashboard") -> dict[str, Any]:
    """The station with --dashboard on the simulator at real speed for `seconds`."""
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        run = _station(
            ["--dashboard", "--device", "sim", "--duration", str(seconds), "-v",
             "--screenshot", "view.png"],
            work,
            LONG_PROTOCOL,
        )  # fmt: skip
        frames: list[tuple[float, int]] = []
        lines: list[str] = []
        t0 = time.monotonic()

        def read() -> None:
            assert run.stderr is not None
            for line in run.stderr:
                lines.append(line)
                if m := STATUS_LINE.search(line):
                    frames.append((time.monotonic() - t0, int(m.group(1))))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        def pids() -> dict[str, int | None]:
            kids = dashboard_children(run.pid)
            return {"station": run.pid, "dashboard": kids[0] if kids else None}

        with Sampler(pids) as sampler:
            code = run.wait(timeout=seconds + 180)
        reader.join(10)
        wall = time.monotonic() - t0
        report = json.loads((work / "r.json").read_text()) if (work / "r.json").exists() else {}
        shot = (work / "view.png").exists()
    return _write(name, {
        "what": f"run_feedback.py --dashboard --device sim --duration {seconds:g} (real time)",
        "exit_code": code,
        "wall_s": round(wall, 1),
        "children": report.get("children", {}),
        "frames_drawn": report.get("dashboard", {}).get("frames_drawn", 0),
        "dashboard_peak_rss_kb": report.get("dashboard", {}).get("peak_rss_kb", 0),
        "frame_rate": frame_rate(frames),
        "station_memory": sampler.summary("station"),
        "dashboard_memory": sampler.summary("dashboard"),
        "screenshot_written": shot,
        "errors": [x.rstrip() for x in lines if "died" in x or "Error" in x][:20],
    })  # fmt: skip


def frame_rate(frames: list[tuple[float, int]]) -> dict[str, Any]:
    """Frames a second between the station's 10 s status lines: first and last third, and the
    slowest interval after the first (the first includes the child's start-up)."""
    if len(frames) < 4:
        return {"intervals": len(frames)}
    rates = [(n1 - n0) / (t1 - t0) for (t0, n0), (t1, n1) in itertools.pairwise(frames) if t1 > t0][
        1:
    ]  # the first interval includes the child's start-up
    third = max(1, len(rates) // 3)
    return {
        "intervals": len(rates),
        "first_third_fps": round(float(np.mean(rates[:third])), 1),
        "last_third_fps": round(float(np.mean(rates[-third:])), 1),
        "min_fps": round(min(rates), 1),
        "median_fps": round(float(np.median(rates)), 1),
    }


# -- a long session at speed=max ----------------------------------------------------------------


def soak_session(signal_s: float, name: str = "session") -> dict[str, Any]:
    """`signal_s` of simulated signal as fast as processing goes (4 h: about 25 min here)."""
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        run = _station(
            ["--device", "sim?speed=max", "--duration", str(signal_s), "--headless"],
            work,
            LONG_PROTOCOL,
        )
        t0 = time.monotonic()
        with Sampler(lambda: {"station": run.pid}) as sampler:
            _, err = run.communicate(timeout=signal_s + 600)
        wall = time.monotonic() - t0
        report = json.loads((work / "r.json").read_text()) if (work / "r.json").exists() else {}
    mem = sampler.summary("station")
    hours = signal_s / 3600.0
    return _write(name, {
        "what": f"run_feedback.py --device sim?speed=max --duration {signal_s:g} --headless",
        "exit_code": run.returncode,
        "signal_s": signal_s,
        "wall_s": round(wall, 1),
        "speed_x": round(signal_s / wall, 1),
        "blocks": report.get("blocks", 0),
        "block_compute_us_p50": report.get("block_compute_us_p50"),
        "block_compute_us_p99": report.get("block_compute_us_p99"),
        "contractions": report.get("contractions", 0),
        "children": report.get("children", {}),
        "station_memory": mem,
        "growth_kb_per_signal_hour": round(mem.get("growth_kb_per_hour", 0) * wall / 3600 / hours)
        if hours
        else 0,
        "stderr_tail": err.splitlines()[-3:],
    })  # fmt: skip


# -- the clinic logger under steady load --------------------------------------------------------


def soak_logger(seconds: float, stations: int = 5, rate_hz: float = 20.0,
                name: str = "logger") -> dict[str, Any]:  # fmt: skip
    """The clinic logger (in this process) on a private Mosquitto, fed by `stations` simulated
    stations in another process, each `rate_hz` QoS 1 session messages and 10 live snapshots
    (QoS 0) a second, for `seconds`. Samples this process's RSS and the logger's queue."""
    return asyncio.run(_soak_logger(seconds, stations, rate_hz, name))


async def _soak_logger(seconds: float, stations: int, rate_hz: float, name: str) -> dict[str, Any]:
    from feedback.broker import free_port
    from feedback.clinic.logger import ClinicLogger
    from feedback.clinic.store import ClinicStore
    from feedback.outputs.broker_access import BrokerAccess

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        store = ClinicStore(str(work / "clinic.sqlite3"))
        logger = ClinicLogger(BrokerAccess.from_url(f"mqtt://127.0.0.1:{port}"), store,
                              group=f"soak{secrets.token_hex(2)}")  # fmt: skip
        try:
            await asyncio.sleep(0.5)
            task = asyncio.create_task(logger.run())
            await asyncio.wait_for(logger.connected.wait(), 20)
            load = subprocess.Popen(
                [sys.executable, "-m", "bench.soak_load", str(port), str(seconds), str(stations),
                 str(rate_hz)],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            t0 = time.monotonic()
            queued: list[tuple[float, int]] = []
            with Sampler(lambda: {"logger": os.getpid()}) as sampler:
                while load.poll() is None:
                    await asyncio.sleep(1.0)
                    queued.append((time.monotonic() - t0, logger.queued()))
            published = json.loads(load.communicate()[0] or "{}")
            drain_t0 = time.monotonic()
            while logger.queued() and time.monotonic() - drain_t0 < 60:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            stats = logger.stats
            stored = store.db.query("SELECT count(*) FROM messages")[0][0]
        finally:
            store.close()
            broker.terminate()
            broker.wait(10)
    q = [n for _, n in queued]
    return _write(name, {
        "what": f"clinic logger, {stations} stations x ({rate_hz:g} QoS 1 + 10 live QoS 0)/s, "
                f"{seconds:g} s",
        "published": published,
        "received": stats.received,
        "stored_messages": int(stored),
        "dropped_qos0": stats.dropped_qos0,
        "queue_peak": stats.queue_peak,
        "queue_max_sampled": max(q, default=0),
        "queue_last_third_mean": round(float(np.mean(q[-max(1, len(q) // 3):])), 1) if q else 0,
        "db_errors": stats.db_errors,
        "logger_memory": sampler.summary("logger"),
    })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("what", choices=["dashboard", "session", "logger"])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--hours", type=float, default=4.0, help="session: hours of signal")
    a = p.parse_args(argv)
    if a.what == "dashboard":
        result = soak_dashboard(a.minutes * 60)
    elif a.what == "session":
        result = soak_session(a.hours * 3600)
    else:
        result = soak_logger(a.minutes * 60)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
