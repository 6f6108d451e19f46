"""Both views on tablet and desktop sizes, from real simulated stations: nothing scrolls or
overflows (a tablet on a stand cannot scroll), the large type stays large, and screenshots are
kept in docs/screenshots/ (VMF_UPDATE_SCREENSHOTS=1 rewrites them; docs change only on purpose).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from tests.clinic.conftest import run_station, station_settings
from tests.web.conftest import open_page
from tests.web.test_web_views import demo_web

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"portrait": (800, 1280), "landscape": (1280, 800), "small-portrait": (600, 960),
         "small-landscape": (1024, 600)}  # fmt: skip
FITS = """() => ({
  overflowX: document.documentElement.scrollWidth > innerWidth,
  overflowY: document.documentElement.scrollHeight > innerHeight,
  wordPx: parseFloat(getComputedStyle(document.getElementById('word')).fontSize),
  smallestPx: Math.min(...[...document.querySelectorAll('main *')]
    .filter(e => e.offsetParent && e.childNodes.length && [...e.childNodes].some(
      n => n.nodeType === 3 && n.textContent.trim()))
    .map(e => parseFloat(getComputedStyle(e).fontSize))),
})"""
# a patient screen for arm's length: the one word ≥ 64 px, nothing smaller than 18 px
WORD_PX, SMALLEST_PX = 64, 18


def keep(shot: Path, name: str) -> None:
    assert shot.stat().st_size > 15_000  # an empty or black page is much smaller
    if os.environ.get("VMF_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, ROOT / "docs" / "screenshots" / name)


async def test_views_fit_every_screen_and_are_kept_as_screenshots(
    browser: Any, tmp_path: Path
) -> None:
    long = {"protocol.reps": 20, "protocol.work_s": 4.0, "simulator.contract_s": 3.5,
            "simulator.relax_s": 1.5, "protocol.hold_s": 2.0, "protocol.rest_s": 3.0}  # fmt: skip
    async with demo_web() as (broker, web):
        pages = {
            size: await open_page(browser, f"{web.url}/patient.html?station=st-1", w, h)
            for size, (w, h) in SIZES.items()
        }
        stations = [
            asyncio.create_task(
                run_station(station_settings(name, **long, **extra), broker.url, tmp_path, "sim")
            )
            for name, extra in (("st-1", {}), ("st-2", {"stimulation.enabled": True}))
        ]
        try:
            # Each page is caught showing HOLD (mid-contraction: everything is on screen),
            # checked, and kept for the docs or closed: rendering pages cost the stations CPU.
            word = "() => document.getElementById('word').textContent"
            loop = asyncio.get_running_loop()
            for size, page in pages.items():
                deadline = loop.time() + 40
                while await page.evaluate(word) != "HOLD":
                    assert loop.time() < deadline, f"{size}: no HOLD in 40 s"
                    await asyncio.sleep(0.05)
                fits = await page.evaluate(FITS)
                await page.screenshot(path=tmp_path / f"HOLD-{size}.png")
                assert not fits["overflowX"] and not fits["overflowY"], (size, fits)
                assert fits["wordPx"] >= WORD_PX, (size, fits)
                assert fits["smallestPx"] >= SMALLEST_PX, (size, fits)
                assert page.errors == [], page.errors
                if size != "portrait":
                    await page.close()
            deadline = loop.time() + 40
            while await pages["portrait"].evaluate(word) != "RELAX":
                assert loop.time() < deadline, "no RELAX in 40 s"
                await asyncio.sleep(0.05)
            await pages["portrait"].screenshot(path=tmp_path / "RELAX-portrait.png")
            await pages["portrait"].close()
            therapist = await open_page(browser, f"{web.url}/therapist.html", 1600, 1000)
            await asyncio.sleep(11)  # ten seconds of curves
            await therapist.screenshot(path=tmp_path / "therapist.png", full_page=True)
            assert therapist.errors == [], therapist.errors
            await therapist.close()  # its MQTT-over-WebSocket client leaves before the broker
        finally:  # a failed check must not leave stations running (they catch SIGTERM)
            for task in stations:
                task.cancel()
            await asyncio.gather(*stations, return_exceptions=True)
    keep(tmp_path / "HOLD-portrait.png", "web-patient-portrait.png")
    keep(tmp_path / "HOLD-landscape.png", "web-patient-landscape.png")
    keep(tmp_path / "RELAX-portrait.png", "web-patient-relax.png")
    keep(tmp_path / "therapist.png", "web-therapist.png")
