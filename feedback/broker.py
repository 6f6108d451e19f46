"""An in-process MQTT broker (amqtt) so that a bare `run_feedback.py` needs no infrastructure.

With `websockets=True` it also listens for MQTT over WebSockets on a second loopback port, so the
browser views (web/, docs/web.md) subscribe to exactly the messages every other receiver gets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:  # imported when a broker starts: ~50 ms a session without one need not pay
    from amqtt.broker import Broker


log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(
        self, port: int | None = None, *, websockets: bool = False, ws_port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.ws_port = (ws_port or free_port()) if websockets else None
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str | None:
        """MQTT over WebSockets for a browser on this machine (None: no such listener)."""
        return None if self.ws_port is None else f"ws://127.0.0.1:{self.ws_port}/mqtt"

    async def __aenter__(self) -> Self:
        # amqtt logs every connection at INFO; that noise would bury the session's own messages.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}
        if self.ws_port is not None:
            listeners["ws"] = {"type": "ws", "bind": f"127.0.0.1:{self.ws_port}"}
        config = {
            "listeners": listeners,
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        from amqtt.broker import Broker

        self._broker = Broker(config)
        await self._broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is None:
            return
        # amqtt 0.12's shutdown can wait forever on a WebSocket client that is still connected
        # (its broadcast loop never ends; seen as a 15-minute hang at the end of a web test). A
        # station's end must not hang on the broker it brought along: give it a few seconds.
        try:
            await asyncio.wait_for(self._broker.shutdown(), SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "embedded broker: shutdown did not finish in %s s; left", SHUTDOWN_TIMEOUT_S
            )
