"""Serves the browser views (web/) and, optionally, relays MQTT over WebSockets to a broker.

One port, two jobs:

- plain GET requests get the static files of web/ (HTML, CSS, ES modules, the vendored mqtt.js)
  and `/config.json`, which tells the pages where the broker is and which clinic to show;
- a WebSocket upgrade on `/mqtt` is piped byte for byte to the broker's MQTT port (TCP or TLS).

The relay is for brokers built without a websockets listener (Debian 12's Mosquitto 2.0.11 is
one: `protocol websockets` fails with "Unable to start any listening sockets"). It does not read
or change MQTT: the browser's CONNECT carries its own account, the broker checks the password and
the ACL exactly as for any client, and every message the page gets is the broker's. A broker
that has its own websockets listener (deploy/mosquitto/conf.d/websockets.conf, the embedded amqtt
broker of the demo) needs no relay: `config.json` then points the pages straight at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import socket
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from feedback.outputs.broker_access import BrokerAccess

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
RELAY_PATH = "/mqtt"
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".md": "text/plain"}
# The pages load only their own files and talk only to a broker over WebSockets.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    # mqtt.js runs its keep-alive timer in a blob: worker, so a background tab is not throttled
    "worker-src 'self' blob:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass
class RelayStats:
    connections: int = 0
    open: int = 0
    bytes_to_broker: int = 0
    bytes_to_browser: int = 0
    refused: int = 0  # the broker could not be reached
    errors: list[str] = field(default_factory=list)


class WebServer:
    """`async with WebServer(config={...}, relay_to=access) as web: print(web.url)`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        root: Path = WEB_ROOT,
        config: dict[str, Any] | None = None,
        relay_to: BrokerAccess | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.root = host, port, root.resolve()
        self.config = dict(config or {})
        self.relay_to = relay_to
        self.tls = tls
        self.stats = RelayStats()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._relay, self.host, self.port, ssl=self.tls,
            process_request=self._static, subprotocols=["mqtt"],  # type: ignore[list-item]
            max_size=None, compression=None,
        )  # fmt: skip
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- static files ------------------------------------------------------------------------

    def _static(self, connection: ServerConnection, request: Request) -> Response | None:
        if "upgrade" in request.headers.get("Connection", "").lower():
            if request.path.split("?")[0] == RELAY_PATH and self.relay_to is not None:
                return None  # go on with the WebSocket handshake
            return _response(HTTPStatus.NOT_FOUND, b"no MQTT relay here\n", "text/plain")
        path = request.path.split("?")[0].split("#")[0]
        if path == "/config.json":
            return _response(HTTPStatus.OK, json.dumps(self.config).encode(), "application/json")
        if path.endswith("/"):
            path += "index.html"
        try:
            file = (self.root / path.lstrip("/")).resolve()
            found = file.is_relative_to(self.root) and file.is_file()
        except (ValueError, OSError):  # a NUL byte or a name too long: no such file, not a 500
            found = False
        if not found:
            return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        kind = TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "text/plain"
        if kind.startswith("text/") or kind == "application/json":
            kind += "; charset=utf-8"
        return _response(HTTPStatus.OK, file.read_bytes(), kind)

    # --- the relay ---------------------------------------------------------------------------

    async def _relay(self, ws: ServerConnection) -> None:
        access = self.relay_to
        assert access is not None  # _static refused the upgrade otherwise
        self.stats.connections += 1
        try:
            reader, writer = await asyncio.open_connection(
                access.host, access.port, ssl=access.ssl_context(),
                server_hostname=access.host if access.tls else None,
            )  # fmt: skip
        except OSError as exc:
            self.stats.refused += 1
            log.warning("MQTT relay: broker %s:%s unreachable: %s", access.host, access.port, exc)
            await ws.close(1011, "broker unreachable")
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # small MQTT packets must not wait for a delayed ACK (docs/mqtt.md)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats.open += 1
        try:
            async with asyncio.TaskGroup() as tasks:
                up = tasks.create_task(self._to_broker(ws, writer))
                down = tasks.create_task(self._to_browser(reader, ws))
                # whichever side ends first ends the other: a half-open MQTT link helps nobody
                await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
                up.cancel()
                down.cancel()
        except* (OSError, ConnectionClosed) as group:
            self.stats.errors.append(str(group.exceptions[0]))
        finally:
            self.stats.open -= 1
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            await ws.close()

    async def _to_broker(self, ws: ServerConnection, writer: asyncio.StreamWriter) -> None:
        async for message in ws:
            data = message.encode() if isinstance(message, str) else message
            self.stats.bytes_to_broker += len(data)
            writer.write(data)
            await writer.drain()

    async def _to_browser(self, reader: asyncio.StreamReader, ws: ServerConnection) -> None:
        while data := await reader.read(65536):
            self.stats.bytes_to_browser += len(data)
            await ws.send(data)


def _response(status: HTTPStatus, body: bytes, kind: str) -> Response:
    headers = Headers(SECURITY_HEADERS)
    headers["Content-Type"] = kind
    headers["Content-Length"] = str(len(body))
    return Response(status.value, status.phrase, headers, body)
