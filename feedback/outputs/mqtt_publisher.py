"""Publishes a session to an MQTT broker with aiomqtt, store-and-forward.

Two lanes with different policies (DESIGN.md):
- session messages (status, session start/end, cues, reps, events) are lossless: written to the
  outbox (SQLite, WAL) before anything else happens, published in order with QoS 1 and deleted
  only when the clinic logger's receipt says it has stored them (`receipts`; without receipts,
  on the broker's PUBACK, which a broker crash can betray); a dead broker means a growing
  backlog and reconnect attempts with backoff, never a stalled processing loop, and a station
  restart resumes where it stopped;
- live metrics and the binary live stream are latest-wins (QoS 0): per topic, only the newest
  snapshot waits to be sent. They go out from their own task, so a live snapshot never queues
  behind session messages waiting for their PUBACKs (or held for want of a subscriber).

Receipts (feedback.outputs.receipts, docs/mqtt.md): after every (re)connection the station sends
again, in order, everything without a receipt; when no receipt comes for `receipt_timeout_s`
(doubling up to RECEIPT_TIMEOUT_MAX_S while none comes) it sends the oldest again as a probe,
and the first receipt after a probe makes it send everything without a receipt again; it
answers the logger's `resend` requests for holes from the outbox. The logger drops the copies.

The same connection carries the station's therapist commands (`.../cmd`), handed raw to
`on_command`, which validates and authorises them (feedback.control.gate). The emergency stop
has its own connection, subscription (`.../cmd/estop`) and handler (`on_estop`): a flood on
`.../cmd` queues in the broker for the command connection (Mosquitto sends each client its
messages in order, a few in flight at a time), so on a shared connection the stop would wait
behind the whole flood; on its own connection nothing is ahead of it. Whatever a handler raises
is counted and logged, and the next message is read: nothing a peer sends can end a listener.

The connection loop supervises its lanes: a lane that fails (a bug, not a lost connection) is
logged, reported through `on_fault` and the connection is started again; reconnects wait a
`Backoff` with full jitter, so a clinic's stations do not retry in lock-step.

The fast lane: session messages do not wait for each other's PUBACK. Up to MAX_IN_FLIGHT are
out at once (in order on the one connection), and `publish` hands a message to the connection
itself when the window has room, so a cue goes out in the same turn of the event loop that made
it, not after a hop to the drain task or behind a message awaiting its acknowledgement. PUBACKs
are matched to messages by packet id in paho's callback; a message leaves the outbox only on its
own acknowledgement (or receipt), so a broker crash with messages in flight loses nothing: the
reconnect sends again everything unacknowledged. The drain task only starts what `publish` could
not (after a reconnect, a hold or a resend request) and watches for PUBACKs that never come.
The packet itself is written by `paho_direct`, paho's bookkeeping kept but not its slower send
path.

With MQTT 5 the PUBACK says whether anyone took the message. "No matching subscribers" means
nobody holds it, not even a logger's persistent session: Mosquitto 2.0 does not restore shared
subscriptions after a restart, so until the clinic logger has subscribed again a publish would
vanish. With `hold_without_subscriber` such a message stays at the head of the outbox and is
sent again every second, in order, until someone takes it. A refusal (reason code 0x80 or
above, e.g. 0x87 "not authorized" from an ACL) is not a delivery either: the message stays,
the error is logged, and it is retried every REFUSED_RETRY_S. After either, one message at a
time is in flight until one is taken again, so a held message is not overtaken.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devices.backoff import Backoff
from feedback.outputs import paho_direct
from feedback.outputs.broker_access import BrokerAccess, parse_broker_url
from feedback.outputs.outbox import MemoryOutbox, Outbox, Pending
from feedback.outputs.receipts import Receipt, ReceiptError, Resend, decode
from feedback.outputs.socket_race import ignore_closed_socket_races
from feedback.outputs.topics import SCHEMA_VERSION, Topics, encode

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code
REFUSED_RETRY_S = 5.0
HOLD_RETRY_S = 1.0
RECEIPT_TIMEOUT_S = 5.0  # no receipt for this long: send again what has none
RECEIPT_TIMEOUT_MAX_S = 60.0
# Below Mosquitto's receive maximum (20 by default) and paho's own in-flight limit (20): no
# message waits in a queue on either side for a slot.
MAX_IN_FLIGHT = 16
PUBACK_TIMEOUT_S = 5.0  # no PUBACK for this long: the connection is treated as dead

__all__ = ["MqttPublisher", "PublisherStats", "parse_broker_url"]

Fault = Callable[[str, str, int], None]  # (what failed, error, how many times so far)


@dataclass(slots=True)
class PublisherStats:
    published: int = 0  # delivered: stored by the logger (receipts) or PUBACKed (without)
    sent: int = 0  # session messages published, copies included
    resent: int = 0  # copies: after a reconnect, a receipt timeout or a resend request
    receipts: int = 0
    resend_requests: int = 0
    receipt_timeouts: int = 0
    bad_receipts: int = 0  # not a receipt of the contract: logged, counted, ignored
    live_published: int = 0
    connects: int = 0
    connect_failures: int = 0
    live_dropped: int = 0
    commands_received: int = 0
    held_no_subscriber: int = 0  # publishes repeated because nobody had subscribed yet
    refused_by_broker: int = 0  # publishes the broker refused (e.g. 0x87 not authorised): kept
    estops_received: int = 0  # messages on the emergency stop's own topic
    handler_errors: int = 0  # a command handler raised: counted, logged, the listener went on
    lane_failures: int = 0  # a lane failed for another reason than the connection: restarted


def _reason_name(rc: int) -> str:
    """' Not authorized' for 0x87: paho's name for a PUBACK reason code ('' if it has none)."""
    try:
        return f" {ReasonCode(PacketTypes.PUBACK, identifier=rc).getName()}"
    except ValueError:
        return ""


async def _subscribe_or_fail(client: aiomqtt.Client, topic: str, qos: int = 1) -> None:
    """Subscribe; a refusal in the SUBACK (0x80 or above) is a failed connection. A broker may
    refuse for a while (NATS, while its cluster elects a leader after a node's loss):
    unnoticed, the station would never hear its receipts or commands again."""
    granted = await client.subscribe(topic, qos=qos)
    if any((rc if isinstance(rc, int) else rc.value) >= 0x80 for rc in granted):
        raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}")


class MqttPublisher:
    def __init__(
        self,
        url: str,
        topics: Topics,
        *,
        client_id: str,
        keepalive_s: int = 10,
        max_backoff_s: float = 5.0,
        outbox: Outbox | None = None,
        access: BrokerAccess | None = None,
        on_command: Callable[[bytes], object] | None = None,
        on_estop: Callable[[bytes], object] | None = None,
        on_fault: Fault | None = None,
        mqtt5: bool = False,
        hold_without_subscriber: bool = False,
        receipts: bool = False,
        receipt_timeout_s: float = RECEIPT_TIMEOUT_S,
    ) -> None:
        self.access = access or BrokerAccess.from_url(url)
        self.host, self.port = self.access.host, self.access.port
        self.topics = topics
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.max_backoff_s = max_backoff_s
        self.stats = PublisherStats()
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.on_command = on_command
        self.on_estop = on_estop
        self.on_fault = on_fault
        self.backoff = Backoff(initial_s=0.2, max_s=max_backoff_s)
        self.last_error = ""  # why the newest connection attempt or connection ended
        self._last_fault = ""
        self._session_id: str | None = None  # named in the last will
        self.mqtt5 = mqtt5
        self.hold_without_subscriber = hold_without_subscriber and mqtt5
        self._client: Any = None  # paho's client of the connection that is up, else None
        self._in_flight: dict[int, tuple[Pending, bool, float]] = {}  # mid → (msg, resend?, t)
        self._window = MAX_IN_FLIGHT  # 1 after a hold or a refusal, until a message is taken
        self._held_until = 0.0  # monotonic: after a hold or refusal nothing goes out before it
        # Raised by the drain task: paho refused a send (reconnect), or a bug met outside it.
        self._send_error: Exception | None = None
        self._live: dict[str, bytes] = {}  # topic → newest payload not sent yet
        self._wakeup = asyncio.Event()  # the outbox has a message
        self._live_wakeup = asyncio.Event()  # a live snapshot is waiting
        self._connected = False
        # Up when the station stopped it: the end line, written after the stop, must not call
        # the station's own disconnect a lost connection.
        self._connected_at_stop = False
        self.estop_connected = False  # the emergency stop's own connection is up
        self._answers: set[asyncio.Future[None]] = set()  # command_ack publishes in flight
        self.receipts = receipts
        self.receipt_timeout_s = receipt_timeout_s
        self._timeout_s = receipt_timeout_s  # grows while no receipt comes
        self._cursor = 0  # outbox id of the last message sent on this connection
        self._highest_sent = 0  # over the process: a message at or below it is a copy
        self._waiting_since = 0.0  # monotonic time of the last receipt progress or rewind
        self._resends: collections.deque[Pending] = collections.deque()  # asked for by the logger
        self._probing = False  # a receipt timeout sent the oldest again: waiting for an answer

    @property
    def backlog(self) -> int:
        return len(self.outbox)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def session_id(self) -> str | None:
        """The session the station's last will names (None before the first session opens)."""
        return self._session_id

    def begin_session(self, session_id: str) -> None:
        """A session opened: the will of each connection made from now on names it. A will is
        fixed when the connection is made, so one already up keeps naming the one before."""
        self._session_id = session_id

    def publish(self, topic: str, message: dict[str, Any], *, retain: bool = False) -> None:
        """Persist a session message to the outbox (lossless, QoS 1). Never waits on the network."""
        session, msg_id = message.get("session"), message.get("msg_id")
        self.outbox.append(
            topic,
            encode(message),
            retain,
            session=session if isinstance(session, str) else None,
            msg_id=msg_id if type(msg_id) is int and msg_id > 0 else None,
        )
        if self._client is not None:
            self._pump_here()  # on the wire now, when the window has room
        else:
            self._wakeup.set()

    def publish_live(self, topic: str, message: dict[str, Any]) -> None:
        """Offer a live snapshot (latest wins, QoS 0). Never blocks."""
        self.publish_live_bytes(topic, encode(message))

    def publish_live_bytes(self, topic: str, payload: bytes) -> None:
        """Offer a payload on a latest-wins topic (e.g. the binary stream). Never blocks; it
        replaces only a payload of the same topic that has not been sent yet."""
        if topic in self._live:
            self.stats.live_dropped += 1
        self._live[topic] = payload
        self._live_wakeup.set()

    def _will(self) -> aiomqtt.Will:
        # The broker sends this when the station vanishes. msg_id 0 is reserved for it: the
        # station cannot number a message the broker publishes at an unknown later time.
        body = {
            "v": SCHEMA_VERSION,
            "type": "status",
            "session": self._session_id,
            "msg_id": 0,
            "t": round(time.time(), 6),
            "state": "offline",
        }
        return aiomqtt.Will(self.topics.status, encode(body), qos=1, retain=True)

    def discard_live(self) -> None:
        """Forget live snapshots not sent yet: after the session's end it would only mislead."""
        self._live.clear()

    async def run(self) -> None:
        """Connect, drain, reconnect with backoff; runs until cancelled. The emergency stop's
        connection runs beside it, with its own reconnects."""
        ignore_closed_socket_races()
        async with asyncio.TaskGroup() as lanes:
            if self.on_estop is not None:
                lanes.create_task(self._estop_connection())
            lanes.create_task(self._connection())

    async def _connection(self) -> None:
        while True:
            try:
                if self.mqtt5 and not self.stats.connects:
                    await self._check_mqtt5()
                async with aiomqtt.Client(
                    **self.access.client_kwargs(),
                    identifier=self.client_id,
                    keepalive=self.keepalive_s,
                    will=self._will(),
                    timeout=5.0,
                    protocol=aiomqtt.ProtocolVersion.V5 if self.mqtt5 else None,
                ) as client:
                    self._watch_pubacks(client)
                    self._rewind()  # whatever has no receipt may have died with the broker
                    self._connected, self._connected_at_stop = True, False
                    self.stats.connects += 1
                    self.backoff.reset()
                    self.last_error = ""
                    await self._subscribe(client)
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._drain(client))
                        tasks.create_task(self._send_live(client))
                        tasks.create_task(self._listen(client))
                        if self.receipts:
                            tasks.create_task(self._watch_receipts())
            except* aiomqtt.MqttError as group:
                exc = group.exceptions[0]
                self.last_error = str(exc) or type(exc).__name__
                if self._connected:
                    log.warning("MQTT connection lost: %s; backlog %d", exc, self.backlog)
                else:
                    self.stats.connect_failures += 1
                    log.debug("MQTT connect failed: %s", exc)
            except* Exception as group:  # a bug in a lane, not the network: restart, report
                self._lane_failed(group.exceptions[0])
            finally:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # stopped, not lost
                    self._connected_at_stop = self._connected
                self._connected = False
            await asyncio.sleep(self.backoff.next())

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        if self.on_command is not None:
            await _subscribe_or_fail(client, self.topics.cmd)
        if self.receipts:
            # QoS 0: a receipt lost with the connection is made good by the rewind on the next
            # one (and a lost one by the probe), so QoS 1 on a clean session buys nothing here,
            # and on the NATS MQTT gateway it costs a replicated JetStream consumer per
            # connection, whose creation after a node's loss outlasts the gateway's 4 s timeout
            # and makes it refuse the subscription, connection after connection, for seconds to
            # minutes. At QoS 0 the gateway serves it from a plain subscription (the NATS
            # logger's receipts are core NATS messages, delivered at QoS 0 whatever one asks).
            await _subscribe_or_fail(client, self.receipt_topic, qos=0)

    async def _estop_connection(self) -> None:
        """Only `.../cmd/estop`, on a connection of its own (no will: the main one has it)."""
        backoff = Backoff(initial_s=0.05, max_s=1.0)  # the stop's path comes back first
        while True:
            try:
                async with aiomqtt.Client(
                    **self.access.client_kwargs(),
                    identifier=f"{self.client_id}-estop",
                    keepalive=self.keepalive_s,
                    timeout=5.0,
                ) as client:
                    await client.subscribe(self.topics.estop, qos=1)
                    self.estop_connected = True
                    backoff.reset()
                    await self._listen(client, answer=True)
            except* aiomqtt.MqttError as group:
                log.debug("MQTT emergency-stop connection: %s", group.exceptions[0])
            except* Exception as group:
                self._lane_failed(group.exceptions[0])
            finally:
                self.estop_connected = False
            await asyncio.sleep(backoff.next())

    def _lane_failed(self, exc: BaseException) -> None:
        self.stats.lane_failures += 1
        error = f"{type(exc).__name__}: {exc}"[:300]
        self.last_error = f"publisher failed: {error}"
        log.error("MQTT publisher lane failed (%s); reconnecting", error, exc_info=exc)
        if self.on_fault is None or error == self._last_fault:
            return  # the same failure again is counted, reported once
        self._last_fault = error
        try:
            self.on_fault("mqtt publisher", error, self.stats.lane_failures)
        except Exception:
            log.exception("reporting a publisher failure failed")

    def undelivered_reason(self) -> str:
        """Why session messages are still waiting, for the line a session ends with: an
        unreachable broker is named only when the broker was in fact not reachable; a lost
        connection only when it was lost, not closed by the station's own stop."""
        if self._connected or self._connected_at_stop:
            if self.stats.refused_by_broker:
                return "the broker refused them: check mqtt.username and the broker's ACL"
            if self.stats.held_no_subscriber:
                return "connected, but no subscriber took them (is the clinic logger running?)"
            if self.receipts:  # delivered means stored by the logger, not PUBACKed
                return "connected, but no receipt from the clinic logger (is it running?)"
            return "connected, but the broker had not acknowledged them all in time"
        if not self.stats.connects:
            return f"broker unreachable: {self.last_error or 'no connection'}"
        return f"connection lost and not back in time: {self.last_error or 'unknown'}"

    async def _check_mqtt5(self) -> None:
        """Before the first connection: does the broker speak MQTT 5? A short connection without
        a will finds out at once (amqtt, for one, refuses it; with a will it would not answer).
        Without it the station uses MQTT 3.1.1, and no "no matching subscribers" check."""
        try:
            async with aiomqtt.Client(
                **self.access.client_kwargs(), protocol=aiomqtt.ProtocolVersion.V5, timeout=5.0
            ):
                return
        except MqttConnectError as exc:
            rc = getattr(exc, "rc", None)
            code = int(getattr(rc, "value", rc)) if rc is not None else None
            if code not in (None, 1, 0x84):  # e.g. bad credentials: not a version question
                raise
            log.info("broker does not accept MQTT 5 (%s); using MQTT 3.1.1", exc)
            self.mqtt5 = False
            self.hold_without_subscriber = False

    def _watch_pubacks(self, client: aiomqtt.Client) -> None:
        # aiomqtt drops the PUBACK reason code and matches acknowledgements only to its own
        # publishes; paho's callback sees the packet id and the code first. QoS 0 sends of the
        # live lane and aiomqtt's own publishes have ids not in `_in_flight` and pass through.
        inner: Any = client._client.on_publish

        def on_publish(c: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
            if mid in self._in_flight:
                self._pump_here(mid, int(getattr(rc, "value", rc) or 0))
            elif inner is not None:
                inner(c, userdata, mid, rc, props)

        client._client.on_publish = on_publish

    async def _drain(self, client: aiomqtt.Client) -> None:
        self._in_flight.clear()
        self._window, self._held_until, self._send_error = MAX_IN_FLIGHT, 0.0, None
        self._client = client._client
        try:
            while True:
                self._wakeup.clear()
                self._pump()
                if self._send_error is not None:
                    raise self._send_error
                now = time.monotonic()
                if self._in_flight:
                    oldest = min(t for _, _, t in self._in_flight.values())
                    if now - oldest > PUBACK_TIMEOUT_S:
                        raise aiomqtt.MqttError("no PUBACK in time")
                    wait = PUBACK_TIMEOUT_S / 4
                else:
                    wait = None
                if self._held_until > now:
                    wait = min(wait or math.inf, self._held_until - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
        finally:
            self._client = None
            self._in_flight.clear()  # unacknowledged: the next connection sends them again

    def _pump_here(self, mid: int | None = None, rc: int = 0) -> None:
        """Pump (after an acknowledgement) from outside the drain task: from `publish`, which
        must never fail, or paho's callback. A failure is the lane's: the drain task raises
        it, and the connection loop restarts and reports it."""
        try:
            if mid is not None:
                self._acknowledged(mid, rc)
            elif self._pump() and self._client is not None and not paho_direct.DIRECT:
                # (paho_direct has written the socket already, and added no write watch.)
                # Write the socket now rather than at the event loop's next poll, which comes
                # only after the rest of the session's block (paho's write is non-blocking;
                # what the socket does not take waits for the poll as before).
                self._client.loop_write()
                self._drop_stale_write_watch(self._client)
        except Exception as exc:
            self._send_error = exc
            self._wakeup.set()

    def _drop_stale_write_watch(self, client: Any) -> None:
        """Undo the write watch that our own `loop_write` made stale.

        paho, given a packet, asks aiomqtt to watch the socket for writing, and aiomqtt adds
        the watch only at the loop's next turn (`call_soon_threadsafe`). The `loop_write` above
        has by then sent everything and withdrawn the request (a `remove_writer` of nothing),
        so the watch, once added, stays on a socket that is always writable: the event loop
        spins (640,000 polls in a 10 s session instead of 7,000; three times the CPU), and the
        station's blocks and cues compete with it. So after aiomqtt's addition runs, the watch
        goes again, unless paho wants to write by then (a full socket: the watch then writes
        the rest and paho withdraws it itself)."""
        sock = client.socket()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, no watch
            return
        if sock is None:
            return
        fd = sock.fileno()

        def drop() -> None:
            if client.socket() is sock and not client.want_write():
                with contextlib.suppress(OSError, ValueError):  # closed meanwhile: gone anyway
                    loop.remove_writer(fd)

        loop.call_soon(drop)  # after the addition, which was queued before it

    def _pump(self) -> int:
        """Put messages on the wire while the window has room; how many. Synchronous: called
        from `publish` in the session's turn, from the PUBACK callback and the drain task."""
        client = self._client
        if client is None or self._send_error is not None or time.monotonic() < self._held_until:
            return 0
        sent = 0
        while len(self._in_flight) < self._window and (item := self._next()) is not None:
            resend = bool(self._resends) and self._resends[0] is item
            rc, mid = paho_direct.publish_qos1(
                client, item.topic, item.payload, item.retain, mqtt5=self.mqtt5
            )
            if rc != 0:  # not connected any more: the drain task reconnects
                self._send_error = aiomqtt.MqttCodeError(rc, "Could not publish message")
                self._wakeup.set()
                return sent
            sent += 1
            if resend:
                self._resends.popleft()
            else:
                self._cursor = item.id
            self._in_flight[mid] = (item, resend, time.monotonic())
            self.stats.sent += 1
            if item.id <= self._highest_sent:
                self.stats.resent += 1
            self._highest_sent = max(self._highest_sent, item.id)
        return sent

    def _acknowledged(self, mid: int, rc: int) -> None:
        item, resend, _ = self._in_flight.pop(mid)
        if self.hold_without_subscriber and rc == NO_MATCHING_SUBSCRIBERS:
            self.stats.held_no_subscriber += 1
            self._hold(item, resend, HOLD_RETRY_S)  # nobody has it: keep it, try again
        elif rc >= 0x80:  # the broker refused it: never count that as delivered
            self._refused(item.topic, rc)
            self._hold(item, resend, REFUSED_RETRY_S)
        else:
            if self._held_until <= time.monotonic():
                self._window = MAX_IN_FLIGHT
            self._sent(item)
        self._pump()

    def _hold(self, item: Pending, resend: bool, delay_s: float) -> None:
        """Send `item` again after `delay_s`, one at a time until one is taken: what followed
        it on the wire is sent again after it (a copy the logger drops), so order holds."""
        self._held_until = time.monotonic() + delay_s
        self._window = 1
        if resend:
            self._resends.appendleft(item)
        else:
            self._cursor = min(self._cursor, item.id - 1)
        self._wakeup.set()  # the drain task sleeps until the hold is over

    @property
    def receipt_topic(self) -> str:
        return f"{self.topics.base}/receipt"

    def _next(self) -> Pending | None:
        """What to send: a message the logger asked for, else the next one on this connection."""
        while self._resends:
            wanted = self._resends[0]
            if self.outbox.get(wanted.id) is not None:
                return wanted
            self._resends.popleft()  # confirmed meanwhile
        return self.outbox.after(self._cursor)

    def _sent(self, item: Pending) -> None:
        """Its PUBACK came (without a refusal)."""
        if not self.receipts or item.session is None:
            # Only now, with the broker's acknowledgement, may the message leave the outbox.
            self.outbox.ack(item)
            self.stats.published += 1
        elif self.outbox.head() is item and not self._probing:
            # The receipt clock starts at its send (a probe's started, jittered, at the timeout).
            self._waiting_since = time.monotonic()

    def _rewind(self) -> None:
        """Send again, in order, everything that has no receipt yet."""
        self._cursor = 0
        self._resends.clear()
        self._probing = False
        self._waiting_since = time.monotonic()
        self._wakeup.set()

    async def _watch_receipts(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.receipt_timeout_s / 4))
            head = self.outbox.head()
            if head is None:
                self._timeout_s = self.receipt_timeout_s  # all delivered: start afresh
                continue
            if head.id > self._cursor or head.session is None:
                continue  # not sent (again) yet on this connection: nothing to wait for
            if time.monotonic() - self._waiting_since < self._timeout_s:
                continue
            self.stats.receipt_timeouts += 1
            log.info(
                "no receipt for %.0f s (%d messages wait for one); sending the oldest again",
                self._timeout_s, self.backlog,
            )  # fmt: skip
            # A probe, not the whole backlog: while the logger is down, each copy would only
            # fill the broker's queue for it. The first receipt after it brings the rest.
            self._probing = True
            if not (self._resends and self._resends[0] is head):
                self._resends.appendleft(head)
            self._wakeup.set()
            self._timeout_s = min(RECEIPT_TIMEOUT_MAX_S, self._timeout_s * 2)
            # Jitter (the next wait is between half and all of it), so that stations cut off
            # together do not all probe together.
            self._waiting_since = time.monotonic() - random.uniform(0, self._timeout_s / 2)

    def _on_receipt(self, payload: bytes) -> None:
        # Runs in the task that also watches the connection: nothing may escape from here.
        try:
            self._apply(decode(payload))
        except ReceiptError as exc:
            self._bad_receipt(str(exc))
        except Exception as exc:  # e.g. the outbox's disk: the message stays, it is resent
            log.exception("receipt not applied")
            self._bad_receipt(f"{type(exc).__name__}: {exc}")

    def _bad_receipt(self, why: str) -> None:
        self.stats.bad_receipts += 1
        if self.stats.bad_receipts % 100 == 1:
            log.warning("ignored a message on %s: %s", self.receipt_topic, why)

    def _apply(self, news: Receipt | Resend) -> None:
        if isinstance(news, Receipt):
            self.stats.receipts += 1
            done = self.outbox.confirm(news.session, news.through, news.stored)
            if done:
                self.stats.published += done
                self._waiting_since = time.monotonic()
                self._timeout_s = self.receipt_timeout_s
            if self._probing:  # the logger answers again: send all that still has no receipt
                self._probing = False
                self._rewind()
        elif isinstance(news, Resend):
            self.stats.resend_requests += 1
            queued = {id(p) for p in self._resends}
            wanted = self.outbox.find(news.session, news.missing)
            self._resends.extend(p for p in wanted if id(p) not in queued)
            self._wakeup.set()

    def _refused(self, topic: str, rc: int) -> None:
        """A refusal (a wrong account or ACL, a quota) will not cure itself; it is logged the
        first time and every 60th retry after, and the message stays at the head of the
        outbox, holding everything behind it: in order, nothing lost, the backlog in view."""
        if self.stats.refused_by_broker % 60 == 0:
            log.error(
                "broker refused a message on %s (MQTT 5 reason 0x%02x%s); kept in the outbox "
                "(%d waiting), retrying every %.0f s: check mqtt.username and the broker's ACL",
                topic, rc, _reason_name(rc), self.backlog, REFUSED_RETRY_S,
            )  # fmt: skip
        self.stats.refused_by_broker += 1

    async def _send_live(self, client: aiomqtt.Client) -> None:
        while True:
            while self._live:
                topic = next(iter(self._live))
                await client.publish(topic, self._live.pop(topic), qos=0)
                self.stats.live_published += 1
            self._live_wakeup.clear()
            await self._live_wakeup.wait()

    async def _listen(self, client: aiomqtt.Client, *, answer: bool = False) -> None:
        # Also the connection watchdog: the iterator raises MqttError when the link drops, which
        # ends the drain task too, even while it idles.
        estop_topic = self.topics.estop
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            if self.receipts and message.topic.matches(self.receipt_topic):
                self._on_receipt(bytes(payload))
                continue
            if message.topic.value == estop_topic:
                self.stats.estops_received += 1
                handler = self.on_estop
            else:
                self.stats.commands_received += 1
                handler = self.on_command
            if handler is None:
                continue
            try:
                reply = handler(bytes(payload))
                if answer and isinstance(reply, dict):  # on this connection: nothing queues
                    self._answer(client, reply)
            except Exception:  # a peer's message must never end the listener
                self.stats.handler_errors += 1
                if self.stats.handler_errors % 100 == 1:  # a flood logs every 100th
                    log.exception("command handler failed (%d so far)", self.stats.handler_errors)
            # A queued backlog would otherwise be handled in one go (a queue that holds
            # messages does not suspend): yield, so the stop's connection and the processing
            # loop get their turn between any two commands of a flood.
            await asyncio.sleep(0)

    def _answer(self, client: aiomqtt.Client, reply: dict[str, Any]) -> None:
        task = asyncio.ensure_future(client.publish(self.topics.ack, encode(reply), qos=1))
        self._answers.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Future[None]) -> None:
        self._answers.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the connection went
            log.debug("command_ack not sent: %s", task.exception())

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty, or the timeout passes. True when empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.backlog and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self.backlog
