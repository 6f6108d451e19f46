"""Dashboard and stimulation figures for issue 5.

- dashboard frames per second, offscreen, 4 channels x 10 s at 2 kHz (drawn decimated to 200 Hz;
  peer: the same window drawn at the full 2 kHz);
- the processing loop's per-block time with and without the dashboard process attached
  (real time, 10 ms blocks; the ratio should stay near 1);
- emergency-stop latency, command to the emulated firmware's EmergencyStopAck: in process
  through the simulator device and StimDriver, and over a real pseudo-terminal (os.openpty,
  raw mode) with the firmware served from a thread.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
import tty
from typing import Any

import numpy as np

from bench.stats import summary
from config.loader import load_settings
from devices.base import LinkStats, SampleBlock
from devices.framed_stream import FramedSampleStream
from devices.simulator import SimulatedDevice, build_firmware
from feedback.dashboard.feed import DashboardFeed, Header
from feedback.pipeline import Pipeline
from feedback.stimulation.driver import StimDriver
from firmware_bridge import (
    Connection,
    EmergencyStop,
    EmergencyStopAck,
    EmergencyStopClear,
    Role,
)

RATE = 2000.0
CH4 = ("VM", "VL", "VM_L", "VL_L")


def _feed(channels: tuple[str, ...], display_hz: float, seconds: float = 10.0) -> DashboardFeed:
    settings = load_settings(environ={}, overrides={"simulator.channels": list(channels)})
    fw = build_firmware(settings.simulator)
    stream = FramedSampleStream(LinkStats())
    stream.feed(fw.hello(), 0.0)
    pipe = Pipeline(settings, RATE, channels)
    header = Header(channels=channels, mvc_mv={c: 0.5 for c in channels}, reps_total=10)
    feed = DashboardFeed(header, RATE, display_hz=display_hz)
    for k in range(round(seconds * 100)):
        for block in stream.feed(fw.advance(20, k / 100), k / 100):
            feed.add(pipe.process(block))
    return feed


def dashboard_fps(frames: int = 60) -> dict[str, Any]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from feedback.dashboard.therapist import TherapistWindow

    app = QApplication.instance() or QApplication([])
    out: dict[str, Any] = {}
    for label, display_hz in (("decimated_200hz", 200.0), ("peer_full_2khz", 2000.0)):
        win = TherapistWindow()
        win.show()
        frame = _feed(CH4, display_hz).frame()
        assert frame is not None
        win.show_frame(frame)
        app.processEvents()
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            win.show_frame(frame)
            win.grab()  # forces the whole window to render
            app.processEvents()
            times.append(time.perf_counter() - t0)
        win.close()
        ms = summary([t * 1000 for t in times], "ms")
        out[label] = {"frame_ms": ms, "fps_p50": round(1000 / float(ms["p50"]), 1),
                      "points_per_curve": int(frame.raw.shape[1])}  # fmt: skip
    return out


def loop_with_and_without_dashboard(seconds: float = 10.0) -> dict[str, Any]:
    """Real-time 10 ms blocks; per-block time of process + tick listeners."""
    from feedback.dashboard.process import DashboardProcess

    settings = load_settings(environ={}, overrides={"simulator.channels": list(CH4)})
    fw = build_firmware(settings.simulator)
    stream = FramedSampleStream(LinkStats())
    stream.feed(fw.hello(), 0.0)
    blocks: list[SampleBlock] = []
    for k in range(round(seconds * 100)):
        blocks += stream.feed(fw.advance(20, k / 100), k / 100)
    header = Header(channels=CH4, mvc_mv={c: 0.5 for c in CH4}, reps_total=10)
    result: dict[str, Any] = {}
    for label in ("without", "with"):
        pipe = Pipeline(settings, RATE, CH4)
        proc = DashboardProcess(patient_view=True) if label == "with" else None
        feed = DashboardFeed(header, RATE)
        if proc is not None:
            proc.start()
            time.sleep(3.0)  # let the child start drawing before timing
        next_frame, times, start = 0.0, [], time.perf_counter()
        for i, block in enumerate(blocks):
            due = start + i * 0.01
            # Between blocks, as DashboardLink.run_frames does in the event loop: 30 frames/s.
            if proc is not None and i and time.perf_counter() >= next_frame:
                next_frame = time.perf_counter() + 1 / 30
                frame = feed.frame()
                assert frame is not None
                proc.offer(frame)
            while time.perf_counter() < due:
                time.sleep(0.0005)
            t0 = time.perf_counter()
            tick = pipe.process(block)
            if proc is not None:
                feed.add(tick)
            times.append((time.perf_counter() - t0) * 1e6)
        if proc is not None:
            result["frames_offered"] = proc.offered
            result["frames_replaced"] = proc.replaced
            proc.close()
        result[f"block_us_{label}_dashboard"] = summary(times, "us")
    w, wo = result["block_us_with_dashboard"], result["block_us_without_dashboard"]
    result["ratio_p50"] = round(float(w["p50"]) / float(wo["p50"]), 2)
    result["ratio_p99"] = round(float(w["p99"]) / float(wo["p99"]), 2)
    return result


async def _estop_in_process(n: int) -> list[float]:
    settings = load_settings(environ={})
    device = SimulatedDevice(settings.simulator)
    driver = StimDriver(settings, device, lambda kind, detail: None)
    out = []
    async with device:
        for _ in range(n):
            latency = await driver.emergency_stop("bench")
            assert latency is not None
            out.append(latency * 1000)
            await driver.rearm("bench")
    return out


def _estop_over_pty(n: int) -> list[float]:
    settings = load_settings(environ={})
    fw = build_firmware(settings.simulator)
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    stop = threading.Event()

    def firmware() -> None:  # the device side: bytes in, reply bytes out
        while not stop.is_set():
            ready, _, _ = select.select([slave], [], [], 0.05)
            if ready:
                reply = fw.receive_data(os.read(slave, 4096), time.monotonic())
                if reply:
                    os.write(slave, reply)

    thread = threading.Thread(target=firmware, daemon=True)
    thread.start()
    host = Connection(Role.HOST)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(master, host.send(EmergencyStop()))
            acked = False
            while not acked:
                select.select([master], [], [], 1.0)
                host.receive_data(os.read(master, 4096))
                acked = any(isinstance(e, EmergencyStopAck) for e in host.events())
            out.append((time.perf_counter() - t0) * 1000)
            os.write(master, host.send(EmergencyStopClear()))
            time.sleep(0.002)
            select.select([master], [], [], 0.1)
            host.receive_data(os.read(master, 4096))
            list(host.events())
    finally:
        stop.set()
        thread.join(1.0)
        os.close(master)
        os.close(slave)
    return out


def estop_latency(n: int = 300) -> dict[str, Any]:
    return {
        "in_process_sim_ms": summary(asyncio.run(_estop_in_process(n)), "ms"),
        "pty_ms": summary(_estop_over_pty(n), "ms"),
    }


def run(seconds: float = 10.0) -> dict[str, Any]:
    result = {
        "what": "dashboard fps offscreen (4 ch x 10 s at 2 kHz); processing per-block time with "
        "and without the dashboard process; e-stop command -> firmware ack latency",
        "dashboard_fps": dashboard_fps(),
        "processing_loop": loop_with_and_without_dashboard(seconds),
        "estop_latency": estop_latency(),
        "cores": os.cpu_count(),
        "note": "np " + np.__version__,
    }
    # pyqtgraph + PySide6 6.12 can crash in interpreter teardown (refcount); the results are made.
    return result
