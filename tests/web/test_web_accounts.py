"""Who sees what in a browser: the broker's accounts and ACL decide, not the page.

Mosquitto runs deploy/mosquitto/mosquitto.conf and acl as shipped (TLS, password file), plus the
browser accounts of docs/web.md (BROWSER_ACL below: the lines deploy/mosquitto/acl gets). Debian
12's Mosquitto has no websockets listener, so the pages reach it through the page server's relay
(feedback.web.server), which pipes bytes and leaves the accounts to Mosquitto; where Mosquitto
has its own listener (deploy/mosquitto/conf.d/websockets.conf) the same pages connect directly
(test_native_websockets_listener, skipped on a build without websockets).

Positive controls keep "sees nothing" honest: the same account on its own station sees data, and
a therapist account sees both stations.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from feedback.broker import free_port
from feedback.outputs.broker_access import BrokerAccess
from feedback.outputs.stream import StreamPacket, encode
from feedback.outputs.topics import MessageNumberer, Topics
from feedback.outputs.topics import encode as encode_json
from feedback.web.server import WebServer
from tests.clinic.test_security import SecureBroker, secure_broker  # noqa: F401  (fixture)
from tests.conftest import mosquitto_binary, wait_for_port
from tests.web.conftest import open_page

CLINIC = "clinic-demo"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
BROWSER_ACL = """
# --- Browser views (docs/web.md): one account per patient tablet, reading only its station.
user tablet-st-a
topic read vmf/v1/clinic-demo/st-a/status
topic read vmf/v1/clinic-demo/st-a/session
topic read vmf/v1/clinic-demo/st-a/cue
topic read vmf/v1/clinic-demo/st-a/live
topic read vmf/v1/clinic-demo/st-a/stream

# A therapist's browser: sees every station, may send commands (as therapist-1).
user therapist-web-1
topic read vmf/v1/#
topic write vmf/v1/+/+/cmd
topic write vmf/v1/+/+/cmd/estop
"""
BROWSER_ACCOUNTS = {"tablet-st-a": "tablet-pass-a", "therapist-web-1": "therapist-pass-1"}


def add_browser_accounts(broker: SecureBroker) -> None:
    passwd = broker.conf.parent / "passwd"
    for name, password in BROWSER_ACCOUNTS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), name, password], check=True)
    with (broker.conf.parent / "acl").open("a") as acl:
        acl.write(BROWSER_ACL)
    broker.stop()
    broker.start()


def packet(session: str, counter: int, pct: float) -> bytes:
    n = 20
    return encode(StreamPacket(
        counter=counter, first_index=counter * n * 10, rate_hz=2000.0, decimation=10,
        t_sample=time.time(), session=session, channels=("VM", "VL"), target=0,
        protocol="demo", patient="P-0001", band=(30.0, 60.0), phase="work", holding=False,
        link_up=True, hold_progress=0.0, set_no=1, sets=1, reps_done=2, reps_total=10,
        phase_left_s=3.0, gaps=0, protocol_errors=0, stim_state="off", stim_bursts=0,
        vm_vl_ratio=1.0, pct_mvc=(pct, pct * 0.9), mvc_mv=(0.5, 0.5),
        envelope=np.full((2, n), pct / 200, np.float16), raw=np.zeros((2, n), np.float16),
        blanked=np.zeros(n, bool),
    ))  # fmt: skip


@contextlib.asynccontextmanager
async def stations_publishing(broker: SecureBroker) -> AsyncIterator[None]:
    """st-a and st-b, each logged in with its own account, publish a stream and cues."""

    async def publish(name: str, pct: float) -> None:
        topics, numberer = Topics(CLINIC, name), MessageNumberer(f"S-{name}")
        account = f"{CLINIC}/{name}"  # station accounts are <clinic>/<station>
        async with aiomqtt.Client(**broker.access(account).client_kwargs(), identifier=name) as c:
            for i in itertools_count():
                await c.publish(topics.stream, packet(f"S-{name}", i, pct), qos=0)
                if i % 10 == 1:
                    cue = numberer.envelope("cue", {
                        "kind": "zone", "value": "in_band", "index": i, "t_sample": time.time(),
                        "phase": "work", "phase_left_s": 3.0, "reps_done": 2, "reps_total": 10,
                        "band": [30, 60]})  # fmt: skip
                    await c.publish(topics.cue, encode_json(cue), qos=1)
                await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(publish("st-a", 45.0)), asyncio.create_task(publish("st-b", 20.0))]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def itertools_count() -> Iterator[int]:
    i = 1
    while True:
        yield i
        i += 1


async def sign_in(page: Any, user: str, password: str, issuer: str | None = None) -> None:
    await page.fill("#login [name=username]", user)
    await page.fill("#login [name=password]", password)
    if issuer is not None:
        await page.fill("#login [name=issuer]", issuer)
    await page.click("#login button[type=submit]")


async def page_value(page: Any, expression: str) -> Any:
    return await page.evaluate(f"() => {expression}")


async def test_each_browser_account_sees_only_what_its_acl_allows(
    browser: Any,
    secure_broker: SecureBroker,  # noqa: F811
) -> None:
    add_browser_accounts(secure_broker)
    relay = BrokerAccess.from_url(secure_broker.url, ca_file=str(secure_broker.ca))
    a_cmds: list[tuple[str, bytes]] = []

    async def read_a_commands() -> None:
        async with aiomqtt.Client(**secure_broker.access(f"{CLINIC}/st-a").client_kwargs()) as c:
            await c.subscribe(Topics(CLINIC, "st-a").cmd, qos=1)
            await c.subscribe(Topics(CLINIC, "st-a").estop, qos=1)
            async for m in c.messages:
                a_cmds.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]

    async with (
        WebServer(config={"clinic": CLINIC, "login": True}, relay_to=relay) as web,
        stations_publishing(secure_broker),
    ):
        reader = asyncio.create_task(read_a_commands())
        wrong = await open_page(browser, f"{web.url}/patient.html?station=st-b")
        await sign_in(wrong, "tablet-st-a", BROWSER_ACCOUNTS["tablet-st-a"])
        own = await open_page(browser, f"{web.url}/patient.html?station=st-a")
        await sign_in(own, "tablet-st-a", BROWSER_ACCOUNTS["tablet-st-a"])
        tablet_overview = await open_page(browser, f"{web.url}/therapist.html")
        await sign_in(tablet_overview, "tablet-st-a", BROWSER_ACCOUNTS["tablet-st-a"], "T-01")
        therapist = await open_page(browser, f"{web.url}/therapist.html")
        await sign_in(therapist, "therapist-web-1", BROWSER_ACCOUNTS["therapist-web-1"], "T-01")
        bad_password = await open_page(browser, f"{web.url}/patient.html?station=st-a")
        await sign_in(bad_password, "tablet-st-a", "not-the-password")
        await asyncio.sleep(3.0)

        # the tablet's own station: data flows (positive control) ...
        assert await page_value(own, "window.vmf.metrics.messages") > 10
        assert await page_value(own, "document.getElementById('effort').textContent") == "45 %"
        # ... the other station: nothing at all reached the page, and it says it waits
        assert await page_value(wrong, "window.vmf.metrics.messages") == 0
        assert await page_value(wrong, "document.getElementById('word').textContent") == "WAIT"
        assert await page_value(wrong, "document.getElementById('effort').textContent") == "–"
        cards = "[...document.querySelectorAll('.card')].map(c => c.dataset.station)"
        assert await page_value(tablet_overview, cards) == ["st-a"]
        assert await page_value(therapist, cards) == ["st-a", "st-b"]
        conn = "document.getElementById('conn').textContent"
        assert "refused" in await page_value(bad_password, conn)
        assert await page_value(bad_password, "window.vmf.metrics.messages") == 0

        # Commands: a tablet account cannot write `cmd` (the broker drops it), a therapist can.
        await tablet_overview.click("[data-station=st-a] .estop")
        await asyncio.sleep(1.0)
        assert a_cmds == []
        await therapist.click("[data-station=st-a] .estop")
        for _ in range(50):
            if a_cmds:
                break
            await asyncio.sleep(0.1)
        # on the stop's own topic, which the station reads before any other command
        assert len(a_cmds) == 1 and b'"action":"emergency_stop"' in a_cmds[0][1]
        assert a_cmds[0][0] == Topics(CLINIC, "st-a").estop
        reader.cancel()
        for p in (wrong, own, tablet_overview, therapist):
            assert p.errors == [], p.errors
    assert web.stats.connections >= 5 and web.stats.open == 0


def mosquitto_has_websockets() -> bool:
    """Debian 12's Mosquitto 2.0.11 is built without websockets: its listener cannot start."""
    binary = mosquitto_binary()
    if binary is None:
        return False
    port = free_port()
    conf = Path(f"/tmp/vmf-ws-probe-{port}.conf")
    conf.write_text(f"listener {port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 2.0)
        return True
    except TimeoutError:
        return False
    finally:
        proc.terminate()
        proc.wait(5)
        conf.unlink()


@pytest.fixture
def native_ws_broker(secure_broker: SecureBroker) -> Iterator[tuple[SecureBroker, int]]:  # noqa: F811
    if not mosquitto_has_websockets():
        pytest.skip("this Mosquitto build has no websockets listener (Debian 12's has none); "
                    "the relay test above covers the browser path")  # fmt: skip
    ws_port = free_port()
    conf = (DEPLOY / "conf.d" / "websockets.conf").read_text()
    conf = conf.replace("/etc/mosquitto/vmf/", f"{secure_broker.conf.parent}/")
    conf = conf.replace("listener 8884", f"listener {ws_port} 127.0.0.1")
    with secure_broker.conf.open("a") as f:
        f.write("\n" + conf)
    add_browser_accounts(secure_broker)
    wait_for_port(ws_port)
    yield secure_broker, ws_port


async def test_native_websockets_listener(
    browser: Any, native_ws_broker: tuple[SecureBroker, int]
) -> None:
    broker, ws_port = native_ws_broker
    # The page's browser must trust the test CA: Chromium is told to ignore certificate errors
    # for this one context only.
    context = await browser.new_context(ignore_https_errors=True)
    async with (
        WebServer(
            config={"clinic": CLINIC, "login": True, "broker": f"wss://127.0.0.1:{ws_port}/mqtt"}
        ) as web,  # fmt: skip
        stations_publishing(broker),
    ):
        page = await context.new_page()
        await page.goto(f"{web.url}/patient.html?station=st-a")
        await sign_in(page, "tablet-st-a", BROWSER_ACCOUNTS["tablet-st-a"])
        await asyncio.sleep(2.0)
        assert await page_value(page, "window.vmf.metrics.messages") > 5
