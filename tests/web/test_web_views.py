"""The browser views in a real Chromium, fed by a real simulated station through a real broker.

- patient view: every value it shows is one the station published (decoded here from the same
  MQTT stream), at most DELAY_S old; the final repetitions and "WELL DONE" match the station;
  when its link dies the page says PAUSE instead of showing a frozen bar (negative control: the
  same freshness check fails on the frozen values);
- therapist view: the EMERGENCY STOP button latches the station's stimulation (an issuer the
  station does not know is refused and stimulation stays armed: negative control).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from feedback.broker import EmbeddedBroker
from feedback.outputs.stream import StreamPacket, decode, encode
from feedback.outputs.topics import Topics
from feedback.web.server import WebServer
from tests.clinic.conftest import run_station, station_settings, wait_until
from tests.web.conftest import Spawn, open_page

CLINIC = "clinic-demo"
# The stated delay: a value on the patient's screen is at most this old (station clock of the
# sample → the page's clock after the frame that shows it; same machine, so one clock).
# The stream comes every 100 ms; bench/bench_web.py measures the distribution.
DELAY_S = 1.0

SHOWN = """() => ({
  effort: document.getElementById('effort').textContent,
  word: document.getElementById('word').textContent,
  reps: document.getElementById('reps').textContent,
  count: document.getElementById('count').textContent,
  countLabel: document.getElementById('count-label').textContent,
  tSample: window.vmf.shownSample ?? null,
  session: window.vmf.state.session,
  now: Date.now() / 1000,
})"""


@contextlib.asynccontextmanager
async def demo_web() -> AsyncIterator[tuple[EmbeddedBroker, WebServer]]:
    async with EmbeddedBroker(websockets=True) as broker, WebServer(
        config={"broker": broker.ws_url, "clinic": CLINIC}
    ) as web:  # fmt: skip
        yield broker, web


@contextlib.asynccontextmanager
async def watching(url: str, station: str) -> AsyncIterator[Seen]:
    """What the station publishes for its bar (stream and live), by t_sample: the page is checked
    against it."""
    seen = Seen()
    host, port = url.removeprefix("mqtt://").split(":")
    topics = Topics(CLINIC, station)

    async def read() -> None:
        async with aiomqtt.Client(host, int(port)) as c:
            await c.subscribe([(topics.stream, 0), (topics.live, 0)])
            async for m in c.messages:
                payload = bytes(m.payload)  # type: ignore[arg-type]
                if m.topic.matches(topics.stream):
                    p = decode(payload)
                    seen.packets.append(p)
                    seen.pct[p.t_sample] = p.pct_mvc[p.target]
                elif m.topic.matches(topics.live):  # (amqtt 0.12 once handed this client
                    live = json.loads(payload)  # another station's retained status)
                    seen.pct[live["t_sample"]] = live["pct_mvc"]["VM"]  # VM: the target

    task = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.3)
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Seen:
    pct: dict[float, float] = field(default_factory=dict)  # t_sample → target % MVC
    packets: list[StreamPacket] = field(default_factory=list)

    def at(self, t_sample: float) -> list[float]:
        """Live (rounded to 0.01 %, t_sample to 1 µs) and stream (float16) values of a sample."""
        return [pct for t, pct in self.pct.items() if abs(t - t_sample) < 2e-6]


def check_shown(shown: dict[str, Any], seen: Seen) -> float:
    """The effort the page shows is the target channel's % MVC of a message the station sent,
    at most DELAY_S old. Returns the age."""
    sent = seen.at(shown["tSample"])
    assert sent, f"the page shows a value the station never sent: {shown}"
    assert shown["effort"] in {f"{math.floor(pct + 0.5)} %" for pct in sent}, (shown, sent)
    age = float(shown["now"] - shown["tSample"])
    assert age <= DELAY_S, f"the value shown is {age:.2f} s old (allowed {DELAY_S} s): {shown}"
    return age


async def test_patient_view_shows_what_the_station_reports(
    browser: Any, tmp_path: Path, spawn: Spawn
) -> None:
    async with demo_web() as (broker, web):
        page = await open_page(
            browser, f"{web.url}/patient.html?station=st-w", width=800, height=1280
        )
        await page.click("#sound")  # sound needs a tap in a browser
        await wait_until_page(page, "String(window.vmf.sound.on)", "true")
        async with watching(broker.url, "st-w") as seen:
            station = spawn(run_station(station_settings("st-w"), broker.url, tmp_path, "sim"))
            await wait_until(lambda: bool(seen.packets), 10, "the station's first stream packet")
            ages, words, labels = [], set(), set()
            for _ in range(40):  # ~4 s of the session, every 100 ms
                shown = await page.evaluate(SHOWN)
                if shown["tSample"] is not None and shown["word"] != "WAIT":
                    ages.append(check_shown(shown, seen))
                    words.add(shown["word"])
                    labels.add(shown["countLabel"])
                await asyncio.sleep(0.1)
            assert len(ages) >= 30, "the page showed values only part of the time"
            assert words <= {"GET READY", "PUSH", "HOLD", "EASE OFF", "RELAX"}, words
            assert {"PUSH", "HOLD"} & words, words  # it worked through a contraction
            assert labels <= {"Starts in", "Work time left", "Rest time left"}, labels
            report = await asyncio.wait_for(station, 30)
            last = max(seen.packets, key=lambda p: p.counter)
            await wait_until_page(page, "document.getElementById('word').textContent", "WELL DONE")
            shown = await page.evaluate(SHOWN)
            assert shown["reps"] == f"{last.reps_done} of {last.reps_total}"
            assert shown["session"] == report["session_id"] and last.reps_done == 3
            played = await page.evaluate("() => window.vmf.sound.played")
            assert {"phase:work", "phase:rest", "phase:done"} <= set(played), played
            assert sum(p.startswith("rep:") for p in played) == 3, played

        # Negative control: a page whose link died keeps its last values; the freshness check
        # must refuse them, and the page itself must say PAUSE rather than show a frozen bar.
        page2 = await open_page(browser, f"{web.url}/patient.html?station=st-x")
        async with watching(broker.url, "st-x") as seen:
            station = spawn(run_station(station_settings("st-x"), broker.url, tmp_path, "sim"))
            await wait_until_page(page2, "String(window.vmf.state.tSample !== null)", "true")
            before = await page2.evaluate(SHOWN)
            check_shown(before, seen)
            await page2.evaluate("window.vmf.client.end(true)")
            await asyncio.sleep(1.5)
            after = await page2.evaluate(SHOWN)
            # what a page without the staleness guard would show now: its last value, 1.5 s on
            with pytest.raises(AssertionError, match="old"):
                check_shown({**before, "now": after["now"]}, seen)
            assert after["word"] == "PAUSE" and after["effort"] == "–"  # this page says so
            await asyncio.wait_for(station, 30)
        assert page.errors == [] and page2.errors == []


async def wait_until_page(page: Any, expression: str, want: str, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    got, seen = None, set()
    while asyncio.get_running_loop().time() < deadline:
        got = await page.evaluate(f"() => {expression}")
        seen.add(got)
        if got == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"page: {expression} is {got!r} (before: {sorted(seen)}), waited for {want!r}"
    )


def station_events(db: Path, kind: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        rows = c.execute("SELECT detail_json FROM events WHERE kind = ?", (kind,)).fetchall()
    return [json.loads(d) for (d,) in rows]


async def test_emergency_stop_button_latches_stimulation(
    browser: Any, tmp_path: Path, spawn: Spawn
) -> None:
    long = {"protocol.reps": 30, "mqtt.therapists": ["T-01"], "stimulation.enabled": True}
    async with demo_web() as (broker, web):
        base = f"{web.url}/therapist.html?station=st-s"
        stranger = await open_page(browser, f"{base}&issuer=T-99")
        page = await open_page(browser, f"{base}&issuer=T-01")
        station = spawn(run_station(station_settings("st-s", **long), broker.url, tmp_path, "sim"))
        stim = "(document.querySelector('[data-station=st-s] .stim')?.textContent ?? '')"
        for p in (page, stranger):
            await wait_until_page(p, f"String({stim}.startsWith('armed'))", "true", 15)
        # Set band: the station checks it and says so; the stream then carries the new band.
        await page.fill("[data-station=st-s] [name=low]", "25")
        await page.fill("[data-station=st-s] [name=high]", "55")
        await page.click("[data-station=st-s] .bandform button")
        note = "document.querySelector('[data-station=st-s] .note').textContent"
        legend = "document.querySelector('[data-station=st-s] .legend').textContent"
        await wait_until_page(page, f"String({legend}.includes('25–55 % MVC'))", "true")
        said = await page.evaluate(f"() => {note}")  # the band_set event or the verdict
        assert "band set to 25–55" in said or "change_band from T-01 accepted" in said, said
        # An issuer the station does not know: refused, stimulation goes on.
        await stranger.click("[data-station=st-s] .estop")
        await wait_until_page(stranger, f"String({note}.includes('refused'))", "true")
        await asyncio.sleep(0.5)
        assert not (await page.evaluate(f"() => {stim}")).startswith("STOPPED")
        assert station_events(tmp_path / "st-s.db", "stim_estop") == []
        # The therapist: the button latches stimulation; the session goes on.
        await page.click("[data-station=st-s] .estop")
        await wait_until_page(page, f"String({stim}.startsWith('STOPPED'))", "true")
        await wait_until(
            lambda: bool(station_events(tmp_path / "st-s.db", "stim_estop")), 5, "stim_estop"
        )
        (estop,) = station_events(tmp_path / "st-s.db", "stim_estop")
        assert estop.get("source") == "therapist_command"
        assert not station.done()
        page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
        await page.click("[data-station=st-s] .stop")
        report = await asyncio.wait_for(station, 15)
        assert report["stopped_by"] == "therapist_stop"
        verdicts = station_events(tmp_path / "st-s.db", "command_result")
        assert [(v["action"], v["accepted"], v["issuer"]) for v in verdicts] == [
            ("change_band", True, "T-01"), ("emergency_stop", False, "T-99"),
            ("emergency_stop", True, "T-01"),
            ("stop", True, "T-01")]  # fmt: skip
        assert page.errors == [] and stranger.errors == []


async def test_therapist_page_shows_hostile_text_as_text_and_each_rep_once(browser: Any) -> None:
    """Whatever a (compromised or buggy) station sends is shown as text: a channel name or a rep
    field carrying markup must not become part of the page; a rep redelivered by QoS 1 (same
    msg_id) is one row, not two."""
    import numpy as np

    evil_channel = "<img src=x onerror=window.pwned=1>"
    packet = StreamPacket(
        counter=1, first_index=0, rate_hz=1000.0, decimation=10, t_sample=0.0, session="s-1",
        channels=(evil_channel, "VL"), target=0, protocol="hold", patient="P-01",
        band=(30.0, 60.0), phase="work", holding=False, link_up=True, hold_progress=0.0,
        set_no=1, sets=1, reps_done=0, reps_total=10, phase_left_s=3.0, gaps=0,
        protocol_errors=0, stim_state="off", stim_bursts=0, vm_vl_ratio=None,
        pct_mvc=(40.0, 30.0), mvc_mv=(0.5, 0.5), envelope=np.full((2, 10), 0.2, "<f2"),
        raw=np.zeros((2, 10), "<f2"), blanked=np.zeros(10, bool),
    )  # fmt: skip
    rep = {"type": "rep", "session": "s-1", "msg_id": 7, "achieved": True,
           "rep": "<img src=x onerror=window.pwned=2>", "time_to_band_s": 0.5,
           "peak_pct_mvc": 50, "hold_s": 3.0, "vm_vl_ratio": 1.1}  # fmt: skip
    async with demo_web() as (broker, web):
        page = await open_page(browser, f"{web.url}/therapist.html?station=st-x")
        await asyncio.sleep(1.0)  # connected and subscribed
        topics = Topics(CLINIC, "st-x")
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            for _ in range(3):
                await c.publish(topics.stream, encode(packet))
                await asyncio.sleep(0.2)
            for _ in range(2):  # the same rep twice, as a redelivery would bring it
                await c.publish(topics.rep, json.dumps(rep), qos=1)
            await c.publish(topics.stream, encode(packet))
        card = "document.querySelector('[data-station=st-x]')"
        await wait_until_page(page, f"String({card}?.querySelectorAll('tbody tr').length)", "1")
        await asyncio.sleep(0.5)
        assert await page.evaluate("() => window.pwned ?? null") is None
        assert await page.evaluate(f"() => {card}.querySelectorAll('img').length") == 0
        legend = await page.evaluate(f"() => {card}.querySelector('.legend').textContent")
        assert evil_channel in legend  # shown, as text
        assert page.errors == [], page.errors
