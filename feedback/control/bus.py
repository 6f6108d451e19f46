"""Delivers typed commands to the handlers that act on them (the session runner, a bench).

`emergency_stop` is an `asyncio.Event` set before any handler runs, so a part of the station
that only waits (the stimulation controller) stops even if a handler fails. A handler that
raises never keeps the others from running: the failure is counted, logged and handed to
`on_error` (the runner records it as a `control_failed` session event).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from feedback.control.commands import COMMAND_TYPES, Command, EmergencyStop

log = logging.getLogger(__name__)
C = TypeVar("C", bound=Command)


class CommandBus:
    def __init__(self) -> None:
        self.emergency_stop = asyncio.Event()
        self.errors = 0
        self.on_error: Callable[[Command, Exception], None] | None = None
        self._handlers: defaultdict[type[Any], list[Callable[[Any], None]]] = defaultdict(list)

    def on(self, kind: type[C], handler: Callable[[C], None]) -> None:
        if kind not in COMMAND_TYPES:
            raise ValueError(f"{kind!r} is not a command type")
        self._handlers[kind].append(handler)

    def submit(self, command: Command) -> None:
        if isinstance(command, EmergencyStop):
            self.emergency_stop.set()  # first, before any handler could fail
        for handler in self._handlers[type(command)]:
            try:
                handler(command)
            except Exception as exc:  # one broken subscriber must not keep the others from stopping
                self.errors += 1
                log.exception("handler for %s failed", command.action)
                if self.on_error is not None:
                    self.on_error(command, exc)
