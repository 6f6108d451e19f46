"""Browser view figures (issue 14), measured in the page by a real Chromium (Playwright).

    python -m bench.bench_web [--seconds 15]     → bench/results/web.json

- sample → pixel delay: a simulated station in real time publishes through the embedded broker;
  the patient and therapist pages (MQTT over WebSockets) record, for each value they draw, the
  page clock one frame after the frame that drew it (the pixel is on screen by then) minus the
  station's `t_sample` (when the sample's bytes arrived at the station; one machine, one clock).
  Peer: a Python subscriber of the same stream on the same broker (receipt − t_sample).
- therapist view frame rate with 4 stations × 2 channels (stream packets at 10 Hz, 20 display
  samples each, published from Python), frames and redraws per second; peer: 1 station.
- page weight (bytes of every response, and gzip of them) and load time (navigation to the
  load event; to the first value on screen in the live run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
from playwright.async_api import Browser, Page, async_playwright
from rich.console import Console

from bench.stats import summary
from config.loader import load_settings
from feedback import app
from feedback.broker import EmbeddedBroker
from feedback.outputs.stream import StreamPacket, decode, encode
from feedback.outputs.topics import Topics
from feedback.web.server import WebServer

CLINIC = "clinic-demo"
CHROMIUM = os.environ.get("VMF_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
RESULTS = Path(__file__).with_name("results")


async def _page(browser: Browser, url: str, weight: dict[str, int] | None = None) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    if weight is not None:

        async def count(response: Any) -> None:
            with contextlib.suppress(Exception):  # a websocket upgrade has no body
                body = await response.body()
                weight["bytes"] += len(body)
                weight["gzip_bytes"] += len(gzip.compress(body))
                weight["files"] += 1

        page.on("response", lambda r: asyncio.ensure_future(count(r)))
    await page.goto(url, wait_until="load")
    return page


async def _load_ms(page: Page) -> float:
    return float(await page.evaluate(
        "() => performance.getEntriesByType('navigation')[0].loadEventEnd"))  # fmt: skip


async def live_delay(browser: Browser, seconds: float) -> dict[str, Any]:
    async with EmbeddedBroker(websockets=True) as broker, WebServer(
        config={"broker": broker.ws_url, "clinic": CLINIC}
    ) as web:  # fmt: skip
        weights = {k: {"bytes": 0, "gzip_bytes": 0, "files": 0} for k in ("patient", "therapist")}
        patient = await _page(browser, f"{web.url}/patient.html?station=bw", weights["patient"])
        therapist = await _page(
            browser, f"{web.url}/therapist.html?station=bw", weights["therapist"]
        )
        loads = {"patient": await _load_ms(patient), "therapist": await _load_ms(therapist)}
        peer: list[float] = []

        async def subscribe() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.subscribe(Topics(CLINIC, "bw").stream)
                async for m in c.messages:
                    peer.append(time.time() - decode(bytes(m.payload)).t_sample)

        reader = asyncio.create_task(subscribe())
        await asyncio.sleep(0.3)
        settings = load_settings(environ={}, overrides={"session.station": "bw"})
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull:
            options = app.RunOptions(device="sim", duration_s=seconds, db=f"{tmp}/s.db",
                                     broker=broker.url, report=None, live_view=False)  # fmt: skip
            started = time.time()
            station = asyncio.create_task(app.run(settings, options, Console(file=devnull)))
            first = None
            while first is None and not station.done():
                if await patient.evaluate("() => window.vmf.shownSample ?? null") is not None:
                    first = time.time() - started
                await asyncio.sleep(0.02)
            await station
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        p_delays = await patient.evaluate("() => window.vmf.metrics.delays")
        t_delays = await therapist.evaluate("() => window.vmf.metrics.delays")
        p_ms = summary([1000 * d for d in p_delays], "ms")
        peer_ms = summary([1000 * d for d in peer], "ms")
        return {
            "sample_to_pixel_patient": p_ms,
            "sample_to_pixel_therapist": summary([1000 * d for d in t_delays], "ms"),
            "sample_to_python_subscriber_peer": peer_ms,
            "patient_over_peer_p50": round(float(p_ms["p50"]) / float(peer_ms["p50"]), 2),
            "page_weight": weights,
            "load_event_ms": {k: round(v, 1) for k, v in loads.items()},
            "session_start_to_first_value_on_patient_screen_s": (
                None if first is None else round(first, 2)
            ),
        }


def _packet(session: str, counter: int, n: int = 20) -> bytes:
    t = counter * n / 200.0
    curve = 0.25 + 0.2 * np.sin(2 * math.pi * 0.2 * (t + np.arange(n) / 200.0))
    env = np.vstack([curve, 0.9 * curve]).astype(np.float16)
    return encode(StreamPacket(
        counter=counter, first_index=counter * n * 10, rate_hz=2000.0, decimation=10,
        t_sample=time.time(), session=session, channels=("VM", "VL"), target=0,
        protocol="demo", patient="P-0001", band=(30.0, 60.0), phase="work", holding=False,
        link_up=True, hold_progress=0.3, set_no=1, sets=1, reps_done=2, reps_total=10,
        phase_left_s=3.0, gaps=0, protocol_errors=0, stim_state="off", stim_bursts=0,
        vm_vl_ratio=1.0, pct_mvc=(45.0, 40.0), mvc_mv=(0.5, 0.5), envelope=env,
        raw=np.zeros((2, n), np.float16), blanked=np.zeros(n, bool),
    ))  # fmt: skip


@contextlib.asynccontextmanager
async def _publishing(port: int, stations: list[str]) -> AsyncIterator[None]:
    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", port) as c:
            counter = 0
            while True:
                counter += 1
                for s in stations:
                    await c.publish(Topics(CLINIC, s).stream, _packet(f"S-{s}", counter))
                await asyncio.sleep(0.1)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def therapist_fps(browser: Browser, stations: int, seconds: float) -> dict[str, Any]:
    names = [f"st-{i}" for i in range(1, stations + 1)]
    async with EmbeddedBroker(websockets=True) as broker, WebServer(
        config={"broker": broker.ws_url, "clinic": CLINIC}
    ) as web, _publishing(broker.port, names):  # fmt: skip
        page = await _page(browser, f"{web.url}/therapist.html")
        await asyncio.sleep(2.0)  # every card built, the rings filling
        read = "() => [window.vmf.metrics.frames, window.vmf.metrics.draws, performance.now()]"
        f0, d0, t0 = await page.evaluate(read)
        await asyncio.sleep(seconds)
        f1, d1, t1 = await page.evaluate(read)
        cards = await page.evaluate("() => document.querySelectorAll('.card').length")
        elapsed = (t1 - t0) / 1000
        return {
            "stations": stations, "cards": cards, "channels_per_station": 2,
            "frames_per_s": round((f1 - f0) / elapsed, 1),
            "card_redraws_per_s": round((d1 - d0) / elapsed, 1),
        }  # fmt: skip


async def run(seconds: float) -> dict[str, Any]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            live = await live_delay(browser, seconds)
            four = await therapist_fps(browser, 4, min(seconds, 10.0))
            one = await therapist_fps(browser, 1, min(seconds, 10.0))
        finally:
            await browser.close()
    return {
        **live,
        "therapist_4x2": four,
        "therapist_1x2_peer": one,
        "fps_4_over_1": round(four["frames_per_s"] / one["frames_per_s"], 2),
        "browser": CHROMIUM,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_web")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the live session")
    args = p.parse_args()
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), **asyncio.run(run(args.seconds))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
