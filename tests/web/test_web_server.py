"""The page server without a browser: static files with their security headers, config.json,
no file outside web/, and no relay unless one is configured."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from feedback.web.server import WebServer

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_get(port: int, path: bytes) -> bytes:
    """A request line urllib would refuse to send."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(200)


async def test_pages_config_and_nothing_else() -> None:
    async with WebServer(config={"clinic": "c-1", "broker": "ws://x/mqtt"}) as web:
        status, headers, body = await asyncio.to_thread(get, f"{web.url}/patient.html")
        assert status == 200 and b'<main id="view"' in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        status, headers, body = await asyncio.to_thread(get, f"{web.url}/patient.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        status, _, body = await asyncio.to_thread(get, f"{web.url}/config.json")
        assert json.loads(body) == {"clinic": "c-1", "broker": "ws://x/mqtt"}
        for bad in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/vendor/../../README.md",
                    "/nothing.html"):  # fmt: skip
            status, _, body = await asyncio.to_thread(get, f"{web.url}{bad}")
            assert status == 404 and b"[project]" not in body, bad
        # bytes no file name can hold: 404, not a 500 and a traceback in the log
        for raw in (b"/a\x00b", b"/" + b"a" * 5000):
            reply = await asyncio.to_thread(raw_get, web.port, raw)
            assert reply.startswith(b"HTTP/1.1 404"), (raw[:10], reply[:40])
        # no relay configured: a WebSocket upgrade is refused, not piped anywhere
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{web.port}/mqtt", subprotocols=["mqtt"]):  # type: ignore[list-item]
                pass


async def test_run_feedback_web_serves_the_patient_view(tmp_path: Path) -> None:
    """`run_feedback.py --web`: the demo prints the views' URLs and serves them while it runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run_feedback.py"), "--web", "--headless",
        "--duration", "6", "--db", str(tmp_path / "s.db"),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "DISPLAY": "", "WAYLAND_DISPLAY": ""},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        assert line.startswith("patient view:"), line
        url = line.split()[-1]
        status, _, body = await asyncio.to_thread(get, url)
        assert status == 200 and b"patient.js" in body
        base = url.split("/patient.html")[0]
        status, _, body = await asyncio.to_thread(get, f"{base}/config.json")
        config = json.loads(body)
        assert config["broker"].startswith("ws://127.0.0.1:") and config["clinic"]
    finally:
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


def test_the_page_relay_lends_the_browser_none_of_the_stations_identity(tmp_path: Path) -> None:
    from config.loader import load_settings
    from feedback.web.demo import page_relay

    station = {
        "mqtt.username": "clinic-a/st-1",
        "mqtt.password": "station-secret",
        "mqtt.tls_ca": "/etc/ca.pem",
        "mqtt.tls_cert": "/etc/st-1.pem",
        "mqtt.tls_key": "/etc/st-1.key",
    }
    settings = load_settings(overrides=station)
    relay = page_relay(settings, "mqtts://broker.example:8883")
    assert (relay.host, relay.port, relay.tls, relay.ca_file) == (
        "broker.example", 8883, True, "/etc/ca.pem")  # fmt: skip
    assert (relay.username, relay.password, relay.cert_file, relay.key_file) == (None,) * 4
