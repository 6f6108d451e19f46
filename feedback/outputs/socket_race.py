"""Keeps a known, harmless race of aiomqtt out of stderr when a broker drops.

aiomqtt asks the event loop to watch the MQTT socket with `call_soon_threadsafe(add_writer, fd)`
(from paho's callbacks). When the broker drops the connection in between, the socket is closed
before the loop gets to it, and the loop's default handler prints "Exception in callback
BaseSelectorEventLoop.add_writer(...)" with an `OSError: [Errno 9] Bad file descriptor`
traceback. When the loop was already watching that fd number (paho reconnected and got the
same number for its new socket), the kernel has forgotten the closed one and the loop's
`modify` fails with ENOENT instead. Nothing is lost: the closed connection surfaces as an
`MqttError` in the client's tasks, which reconnect. So exactly those cases (EBADF or ENOENT from
`add_reader` / `add_writer`) are logged at debug level and counted; every other error goes to the
handler that was there before.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

log = logging.getLogger(__name__)

_WATCHERS = frozenset({"add_reader", "add_writer", "remove_reader", "remove_writer"})
closed_socket_races = 0  # how many times this was seen (tests, diagnostics)


def ignore_closed_socket_races(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the filter on `loop` (the running loop by default); installing twice is a no-op."""
    loop = loop or asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    if getattr(previous, "_vmf_socket_race", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        global closed_socket_races
        if _is_race(context):
            closed_socket_races += 1
            log.debug("socket closed before the loop watched it (broker dropped): %s", context)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._vmf_socket_race = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def _is_race(context: dict[str, Any]) -> bool:
    exc = context.get("exception")
    if not isinstance(exc, OSError) or exc.errno not in (errno.EBADF, errno.ENOENT):
        return False
    callback = getattr(context.get("handle"), "_callback", None)
    return getattr(callback, "__name__", "") in _WATCHERS
