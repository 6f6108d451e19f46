"""The page server without a browser: static files with their security headers, config.json,
no file outside web/, and no relay unless one is configured."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from feedback.web.server import WebServer


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


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
        # no relay configured: a WebSocket upgrade is refused, not piped anywhere
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{web.port}/mqtt", subprotocols=["mqtt"]):  # type: ignore[list-item]
                pass
