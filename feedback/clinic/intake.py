"""The logger's MQTT intake: paho-mqtt in its own network thread, messages handed over in batches.

Why paho and not aiomqtt (bench/intake_compare.py: the same 34,300 queued messages drained
with manual acks, nothing stored): aiomqtt 8.7k msg/s, paho in its own thread 16.4k msg/s.
aiomqtt reads one packet per socket wake-up and makes each message an asyncio future and a
queue item; here paho's thread appends to a deque and the writer takes up to `max_batch` at once.

- Acknowledgement after the commit: manual acks (`manual_ack_set`), `ack()` is called by the
  writer once the batch holding a message is committed.
- A message remembers the connection it came on (`generation`): after a reconnect its packet id
  means nothing (or something else) to the broker, so it is not acknowledged; the broker
  redelivers it and the store drops the copy (counted as a duplicate). Messages waiting in the
  deque at a disconnect are dropped for the same reason: the broker still holds them.
- Memory is bounded whatever the broker's backlog: at `max_waiting` messages waiting, paho's
  thread stops reading the socket (TCP then holds the broker back) until the writer has taken
  them down to half. Mosquitto 2.0.11 ignores the receive maximum and sends a reconnected logger
  its whole backlog (30k-62k waiting seen, 161 MB with a 136k backlog). Writes go on meanwhile:
  acks, pings, and the receipts, which go on a link of their own (`ReceiptLink`) because their
  PUBACKs on this one would wait behind the unread backlog.
- QoS 0 (live snapshots, latest wins) past `max_queued` waiting are dropped and counted (without
  `max_waiting`); QoS 1 ones are always kept.
- Reconnects: paho's own loop, paced with jitter (`Redial`, redial.py). A disconnect the logger
  asked for (`stop`) is not a lost connection: logged at INFO, not counted, no redial, no
  `on_lost` (a warning and a count on every restart would be a false alarm).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from feedback.clinic.paho_reader import BatchReadingClient
from feedback.clinic.redial import Redial
from feedback.outputs.broker_access import BrokerAccess

log = logging.getLogger("feedback.clinic.intake")


class SharedTablesProperties(Properties):
    """paho's MQTT 5 Properties, whose constant tables (three dicts and a list: every property's
    name, id and type) it builds anew for every packet it decodes, here shared: ~10 us a
    message, a tenth of the logger's CPU in a drain (py-spy of `make loadtest`). paho only
    reads the tables (properties.py), so each instance behaves as before."""

    _template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    _attributes = tuple(name.replace(" ", "") for name in _template.names)

    def __init__(self, packetType: int) -> None:  # paho calls it with this name
        # object's setattr: paho's own checks each name against the table of names
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", self._template.types)
        object.__setattr__(self, "names", self._template.names)
        object.__setattr__(self, "properties", self._template.properties)

    def clear(self) -> None:
        attributes = self.__dict__
        for name in self._attributes:
            if name in attributes:
                delattr(self, name)


def share_property_tables() -> bool:
    """Decode with SharedTablesProperties (once per process); False if this paho decodes
    elsewhere (then nothing changes)."""
    current = getattr(paho_packet, "Properties", None)
    if current is SharedTablesProperties:
        return True
    if current is not Properties:
        return False
    paho_packet.Properties = SharedTablesProperties  # type: ignore[attr-defined]
    return True


@dataclass(slots=True)  # not frozen: ~1.7 us less a message (validation.Message says why)
class Received:
    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int  # the connection it came on


@dataclass(slots=True)
class IntakeStats:
    received: int = 0
    connects: int = 0
    disconnects: int = 0
    dropped_qos0: int = 0  # live snapshots dropped while max_queued were waiting
    dropped_on_disconnect: int = 0  # waiting when the link broke: the broker redelivers them
    stale_acks: int = 0  # stored after a reconnect: not acked, redelivered, dropped as a copy
    queue_peak: int = 0
    read_pauses: int = 0  # times max_waiting were waiting and reading stopped


class PahoIntake:
    def __init__(
        self,
        access: BrokerAccess,
        client_id: str,
        topics: list[str],
        *,
        unsubscribe: list[str] | None = None,
        receive_maximum: int = 2000,
        session_expiry_s: int = 7 * 24 * 3600,
        max_queued: int = 4000,
        max_waiting: int | None = None,
        on_ready: Callable[[], None] = lambda: None,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.access = access
        self.topics = topics
        self.unsubscribe = unsubscribe or []
        self.max_queued = max_queued
        self.max_waiting = max_waiting
        self._resume_at = -1 if max_waiting is None else max_waiting // 2
        self.on_ready, self.on_lost = on_ready, on_lost
        self.stats = IntakeStats()
        share_property_tables()
        self.generation = 0
        self._stopping = threading.Event()  # set by stop(): the coming disconnect is asked for
        self._queue: collections.deque[Received] = collections.deque()
        self._cond = threading.Condition()
        self._connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._connect_props.SessionExpiryInterval = session_expiry_s
        self._connect_props.ReceiveMaximum = receive_maximum
        c = BatchReadingClient(client_id, self._on_publish_packet)
        c.manual_ack_set(True)
        c.max_inflight_messages_set(1000)  # receipts in flight to the broker
        c.max_queued_messages_set(0)
        if access.username:
            c.username_pw_set(access.username, access.password)
        context = access.ssl_context()
        if context is not None:
            c.tls_set_context(context)
        self._redial = Redial(c)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        self.client = c

    def start(self) -> None:
        self.client.connect_async(
            self.access.host,
            self.access.port,
            keepalive=15,
            clean_start=False,
            properties=self._connect_props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping.set()  # before disconnect(): paho's thread reports it at once
        self.client.disconnect()
        self.client.loop_stop()

    def take(self, max_n: int, timeout_s: float) -> list[Received]:
        """Up to max_n waiting messages, in arrival order; [] after timeout_s with none."""
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout_s)
            q = self._queue
            taken = [q.popleft() for _ in range(min(max_n, len(q)))]
            if len(q) <= self._resume_at and self.client.reading_paused:
                self.client.resume_reading()
            return taken

    def queued(self) -> int:
        return len(self._queue)

    def ack(self, batch: list[Received]) -> None:
        """PUBACK what is committed, on the connection it came on only; one write a batch."""
        generation = self.generation
        mids = []
        for m in batch:
            if m.qos == 0:
                continue
            if m.generation != generation:
                self.stats.stale_acks += 1
                continue
            mids.append(m.mid)
        self.client.ack_many(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    # paho's network thread from here on

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused the connection: %s", rc)
            return
        with self._cond:
            self.generation += 1
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        bad = [c for c in codes if c.is_failure]
        if bad:
            log.error("subscription refused: %s", bad)
            return
        # A persistent session from an older logger still holds the whole tree: drop it
        # (after subscribing, so nothing falls between; an overlap copy is a noted duplicate).
        for topic in self.unsubscribe:
            client.unsubscribe(topic)
        self.stats.connects += 1
        self._redial.reset()
        self.on_ready()

    def _on_disconnect(
        self, client: mqtt.Client, _u: Any, _flags: Any, rc: ReasonCode, _p: Any = None
    ) -> None:
        with self._cond:
            self.stats.dropped_on_disconnect += len(self._queue)
            self._queue.clear()
            self.client.resume_reading()  # the next connection starts reading
        if self._stopping.is_set():
            log.info("disconnected from the broker (stopping): %s", rc)
            return
        self.stats.disconnects += 1
        self._redial.lost()
        log.warning("broker connection lost: %s", rc)
        self.on_lost()

    def _on_publish_packet(self, topic: bytes, payload: bytes, qos: int, mid: int) -> None:
        with self._cond:
            q = self._queue
            if qos == 0 and len(q) >= self.max_queued:
                self.stats.dropped_qos0 += 1
                return
            # Bytes that are not UTF-8 stay visible; the store quarantines them.
            text = topic.decode("utf-8", "backslashreplace")
            q.append(Received(text, payload, qos, mid, self.generation))
            self.stats.received += 1
            if len(q) > self.stats.queue_peak:
                self.stats.queue_peak = len(q)
            if len(q) == 1:
                self._cond.notify()
            if self.max_waiting is not None and len(q) >= self.max_waiting:
                self.client.pause_reading()
                self.stats.read_pauses += 1
