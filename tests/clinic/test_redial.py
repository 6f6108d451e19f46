"""Redial: the reconnect pacing both of the logger's paho connections use (intake, receipts)."""

from __future__ import annotations

import random
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from feedback.clinic.redial import Redial


class Recording(mqtt.Client):
    def __init__(self) -> None:
        super().__init__(CallbackAPIVersion.VERSION2, client_id="t")
        self.delays: list[tuple[Any, Any]] = []

    def reconnect_delay_set(self, min_delay: Any = 1, max_delay: Any = 120) -> None:
        self.delays.append((min_delay, max_delay))
        super().reconnect_delay_set(min_delay, max_delay)


def test_each_failure_draws_a_jittered_delay_and_a_connection_starts_over() -> None:
    client = Recording()
    redial = Redial(client)
    redial._backoff.rng = random.Random(3)
    assert len(client.delays) == 1  # set before the first attempt
    for _ in range(6):
        client.on_connect_fail(client, None)  # paho's callback, as paho calls it
    redial.lost()
    delays = [lo for lo, hi in client.delays[1:] if lo == hi]
    assert len(delays) == 7 and len(set(delays)) == 7  # jittered: no two alike
    assert all(0 <= d < 2.0 for d in delays)  # the ceiling
    assert redial._backoff.failures == 8
    redial.reset()
    assert redial._backoff.ceiling_s == 0.2  # back to the first delay's ceiling
    assert client.on_socket_open is not None  # Nagle off on every socket
