"""The reconnect pacing the logger's two paho connections share (intake.py, receipt_link.py).

paho's own loop reconnects, but its delay doubles without jitter; before each wait the delay is
set from `devices.backoff.Backoff` (full jitter), as every reconnecting client does, so a
clinic's loggers do not meet a restarted broker in lock-step. A clinic has one or two loggers,
not a herd: a short ceiling gets them back soon.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt

from devices.backoff import Backoff


class Redial:
    """Attached to a client: sets its first delay, draws the next one when a connection fails
    or is lost (`lost`), starts over once the owner says it is back (`reset`), and turns
    Nagle off (a PUBACK or a receipt held back by it holds back a batch's ack)."""

    def __init__(self, client: mqtt.Client) -> None:
        self._client = client
        self._backoff = Backoff(initial_s=0.2, max_s=2.0)
        self.lost()
        client.on_connect_fail = self._on_connect_fail
        client.on_socket_open = _no_delay

    def lost(self) -> None:
        """The delay paho waits before its next attempt: the backoff's, jittered."""
        delay = self._backoff.next()
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # typed int, sleeps a float

    def reset(self) -> None:
        self._backoff.reset()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self.lost()


def _no_delay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
