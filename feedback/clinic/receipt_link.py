"""The logger's second MQTT connection: receipts and resend requests out, their PUBACKs back.

Why not the intake's connection: the broker sends its PUBACK for a receipt after everything it
has already queued for that connection, and Mosquitto 2.0.11 queues a reconnected logger's whole
backlog (it ignores the receive maximum). A batch is acknowledged only once its receipts are
confirmed, so on the intake's connection that ack waited behind up to 136k messages (one
loadtest stalled > 5 s), and with the intake's reads paused to bound its memory it would wait
for ever. Here nothing queues ahead of the PUBACKs.

The session is not persistent: a receipt unconfirmed when the link breaks is published again
once it is back (`deliver`), as long as the batch it answers can still be acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from feedback.clinic.redial import Redial
from feedback.outputs.broker_access import BrokerAccess

log = logging.getLogger("feedback.clinic.receipt_link")

Outgoing = tuple[str, bytes]  # topic, payload


class ReceiptLink:
    def __init__(self, access: BrokerAccess, client_id: str) -> None:
        self.access = access
        self.connected = threading.Event()
        self._closed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        if access.username:
            c.username_pw_set(access.username, access.password)
        context = access.ssl_context()
        if context is not None:
            c.tls_set_context(context)
        self._redial = Redial(c)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self.client = c

    def start(self) -> None:
        self.client.connect_async(self.access.host, self.access.port, keepalive=15)
        self.client.loop_start()

    def stop(self) -> None:
        self._closed.set()
        self.client.disconnect()
        self.client.loop_stop()

    def deliver(self, messages: list[Outgoing], wanted: Callable[[], bool], wait_s: float) -> bool:
        """Publish at QoS 1 and wait for the broker's PUBACK of each; what a broken link or
        wait_s left unconfirmed goes again once connected. False once not `wanted()` any more
        or the link is stopped."""
        pending = messages
        while pending:
            if self._closed.is_set() or not wanted():
                return False
            if not self.connected.wait(0.5):
                continue
            infos = [(m, self.client.publish(m[0], m[1], qos=1)) for m in pending]
            deadline = time.monotonic() + wait_s
            pending = []
            for m, info in infos:
                try:
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                except (RuntimeError, ValueError):  # not queued: the link is down
                    pending.append(m)
                    continue
                if not info.is_published():
                    pending.append(m)
            if pending:
                log.warning("%d receipts unconfirmed: publishing them again", len(pending))
        return True

    # paho's network thread from here on

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused the receipts' connection: %s", rc)
            return
        self._redial.reset()
        self.connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        self.connected.clear()
        if self._closed.is_set():  # asked for (stop): nothing lost, nothing to redial
            log.info("receipts' connection closed (stopping): %s", rc)
            return
        self._redial.lost()
        log.warning("receipts' connection lost: %s", rc)
